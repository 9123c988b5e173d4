"""Small dense linear algebra shared by the Hessian tools and the optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["eigh"]

_EIGH_QR = getattr(getattr(jax.lax.linalg, "EighImplementation", None), "QR", None)  # jax ≥ 0.8.1


def eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jnp.linalg.eigh`` of a symmetric matrix — ascending eigenvalues, and
    eigenvectors as columns — by divide and conquer on GPUs.

    On NVIDIA and AMD GPUs JAX's default solver for a matrix up to 32 × 32 is
    the Jacobi method (cuSOLVER ``syevj``; above that it is ``syevd``), which
    costs 0.36–0.55 ms a call on an H100 whatever the size (8 × 8 to 32 × 32,
    float32 and float64), where Lanczos's stopping test runs one per step
    against products of about 0.06 ms for a 3 466-parameter MLP. Divide and
    conquer (``syevd``, JAX's ``QR`` implementation, what LAPACK runs on CPU)
    takes 0.09–0.22 ms there, so GPUs use it at every size. Other platforms
    keep JAX's default: LAPACK's ``syevd`` on CPU, and on TPU the QDWH method
    (it has no QR path). The choice is made when the program is lowered
    (``jax.lax.platform_dependent``), so one traced function serves all.
    """
    def default(a):
        values, vectors = jnp.linalg.eigh(a)
        return values, vectors

    if _EIGH_QR is None:
        return default(a)

    def divide_and_conquer(a):
        vectors, values = jax.lax.linalg.eigh(a, implementation=_EIGH_QR)
        return values, vectors

    return jax.lax.platform_dependent(a, default=default, cuda=divide_and_conquer, rocm=divide_and_conquer)
