"""Bad input to the Hessian tools: one clear error naming the problem and the fix,
raised before tracing, or a defined value — never a deep JAX error, a silent wrong
answer or a NaN. Small pytrees and closed forms only, so the file runs in seconds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdl.hessian as jh
from jdl.hessian._flat import as_key


def _loss(p):
    """Closed-form Hessian: diag(2, 2, 2, 2) on ``w`` and diag(6 b) on ``b``."""
    return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 3)


PARAMS = {"w": jnp.ones(4), "b": jnp.ones(2)}
DIAG = jnp.array([5.0, -5.0, 1.0, 0.5, 0.2])


def _zero(v):
    return jax.tree.map(jnp.zeros_like, v)


# ---------------------------------------------------------------------------------
# 1. directions shaped unlike params
# ---------------------------------------------------------------------------------


def test_direction_with_a_missing_leaf_is_named():
    with pytest.raises(ValueError, match=r"structure differs \(missing \['b'\]\)"):
        jh.lanczos(3)(jh.hessian_operator(_loss), {"w": jnp.ones(4)}, PARAMS)


def test_direction_leaf_shapes_are_checked_by_every_product():
    v = {"w": jnp.ones(3), "b": jnp.ones(2)}
    data = {"x": jnp.ones((5, 4)), "y": jnp.ones(5)}
    products = [
        lambda: jh.hvp(_loss, PARAMS, v),
        lambda: jh.linearize_hessian(_loss, PARAMS)[1](v),
        lambda: jh.linearize_hessian(_loss, PARAMS, mode="reverse")[1](v),
        lambda: jh.gauss_newton(lambda p: p["w"], lambda z: jnp.sum(z**2))(v, PARAMS),
        lambda: jh.fisher(lambda p, d: d["x"] * p["w"][None])(v, PARAMS, data),
        lambda: jh.empirical_fisher(lambda p, d: d["x"] @ p["w"])(v, PARAMS, data),
        lambda: jh.dataset_hessian_operator(lambda p, d: _loss(p), batch_size=2)(v, PARAMS, data),
    ]
    for product in products:
        with pytest.raises(ValueError, match=r"\['w'\]: float32\[3\] against float32\[4\]"):
            product()


def test_direction_dtype_must_match_params():
    v = {"w": jnp.ones(4, jnp.bfloat16), "b": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"\['w'\]: bfloat16\[4\] against float32\[4\].*astype"):
        jh.hvp(_loss, PARAMS, v)
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match=r"float64\[3\] against float32\[3\]"):
            jh.lanczos(3)(jh.hessian_operator(lambda p: jnp.sum(p**2)), jnp.ones(3, jnp.float64),
                          jnp.ones(3, jnp.float32))


# ---------------------------------------------------------------------------------
# 2. half precision where an eigensolver is needed, and only there
# ---------------------------------------------------------------------------------


def test_half_precision_is_refused_by_the_eigensolvers():
    p16 = jax.tree.map(lambda a: a.astype(jnp.float16), PARAMS)
    mv = jh.hessian_operator(_loss)
    calls = [
        lambda: jh.dense_spectrum(_loss, p16),
        lambda: jax.jit(jh.dense_eigenvalues)(jnp.eye(3, dtype=jnp.bfloat16)),
        lambda: jh.hutch_plus_plus(9)(mv, p16, p16, key=0),
        lambda: jh.spectral_density(mv, p16, p16, key=0, num_steps=3, num_probes=2),
        lambda: jh.block_eigenvalues(_loss, p16, block="w"),
        lambda: jh.lanczos(3)(mv, p16, p16),
        lambda: jh.lanczos(4, block_size=2)(mv, jax.tree.map(lambda a: jnp.stack([a, a]), p16), p16),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"float32 or float64.*astype\(jnp.float32\)"):
            call()


def test_half_precision_products_still_work():
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PARAMS)
    hv = jh.hvp(_loss, pb, pb)
    np.testing.assert_array_equal(np.asarray(hv["w"], np.float32), 2.0)
    np.testing.assert_array_equal(np.asarray(hv["b"], np.float32), 6.0)


# ---------------------------------------------------------------------------------
# 3. loss slices
# ---------------------------------------------------------------------------------


def test_loss_slice_checks_the_direction():
    alphas = jnp.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match=r"direction must be shaped like params.*\['w'\]"):
        jh.loss_slice(_loss, PARAMS, {"w": jnp.ones(3), "b": jnp.ones(2)}, alphas=alphas)
    with pytest.raises(ValueError, match=r"direction2 must be a pytree shaped like params"):
        jh.loss_surface(_loss, PARAMS, PARAMS, {"w": jnp.ones(4)}, alphas=alphas, betas=alphas)
    with jax.enable_x64(True):  # a float64 direction is cast: the loss stays in the params' float32
        d = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float64), PARAMS)
        assert jh.loss_slice(_loss, PARAMS, d, alphas=alphas, normalize=False).dtype == jnp.float32


def test_zero_direction_raises_eagerly_and_is_constant_under_jit():
    alphas = jnp.linspace(-1.0, 1.0, 3)
    zero = _zero(PARAMS)
    with pytest.raises(ValueError, match="norm 0.0.*non-zero"):
        jh.loss_slice(_loss, PARAMS, zero, alphas=alphas)
    with pytest.raises(ValueError, match="direction1 has norm 0.0"):
        jh.loss_surface(_loss, PARAMS, zero, PARAMS, alphas=alphas, betas=alphas)
    traced = jax.jit(lambda d: jh.loss_slice(_loss, PARAMS, d, alphas=alphas))(zero)
    np.testing.assert_array_equal(traced, float(_loss(PARAMS)))


# ---------------------------------------------------------------------------------
# 4. keys
# ---------------------------------------------------------------------------------


def test_key_must_be_a_seed_or_a_prng_key():
    trace = jh.hutchinson(3)
    for bad in (0.5, True, "0", jnp.ones(2)):
        with pytest.raises(TypeError, match="integer seed or a PRNG key"):
            trace(jh.hessian_operator(_loss), PARAMS, PARAMS, key=bad)
    a = as_key(np.int64(3))
    for key in (3, jax.random.key(3), jax.random.PRNGKey(3), jnp.asarray(3)):
        assert jnp.array_equal(jax.random.key_data(as_key(key)), jax.random.key_data(a))


# ---------------------------------------------------------------------------------
# 5. NumPy integers as settings
# ---------------------------------------------------------------------------------


def test_numpy_integers_are_accepted_as_counts():
    data = {"x": jnp.ones((5, 4))}
    hv = jh.dataset_hessian_operator(lambda p, d: _loss(p), batch_size=np.int64(2))(PARAMS, PARAMS, data)
    np.testing.assert_allclose(hv["w"], 2.0)
    r = jh.power_iteration(k=np.int64(1), max_steps=np.int32(50))(lambda v: DIAG[2:] * v, jnp.ones(3))
    assert float(r.eigenvalues[0]) == pytest.approx(1.0, rel=1e-3)
    est = jh.hutchinson(np.int64(3))(lambda v: 2 * v, jnp.ones(4), key=0)
    assert float(est.estimate) == pytest.approx(8.0)
    sd = jh.spectral_density(lambda v: 2 * v, jnp.ones(4), key=0, num_steps=np.int64(2),
                             num_probes=np.int64(2), grid_size=np.int64(64))
    assert sd.density.shape == (64,)
    r = jh.lanczos(np.int64(3), k=np.int32(1), block_size=np.int64(1))(lambda v: DIAG[2:] * v, jnp.ones(3))
    assert float(r.eigenvalues[0]) == pytest.approx(1.0, rel=1e-5)
    for bad in (np.bool_(True), 2.0, 0):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            jh.dataset_hessian_operator(_loss, batch_size=bad)


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "1e-3", True, jnp.ones(2)])
def test_tolerances_are_checked_when_configured(bad):
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0, got .*; a residual"):
        jh.lanczos(10, tol=bad)
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0.*relative change"):
        jh.power_iteration(tol=bad)
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0.*bound on ‖∇L‖"):
        jh.find_critical_point(_loss, PARAMS, tol=bad)
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0.*lambda_max"):
        jh.SharpnessTracker(train=False, tol=bad)


def test_critical_point_finder_checks_its_settings_before_any_work():
    calls = []

    def loss(p):
        calls.append(1)
        return _loss(p)

    for kwargs, message in [
        ({"damping": 0.0}, "damping must be a positive finite number, got 0.0; the initial Levenberg"),
        ({"damping": -1.0}, "damping must be a positive"),
        ({"damping": float("inf")}, "damping must be a positive"),
        ({"max_steps": 2.5}, "max_steps must be an integer >= 0, got 2.5"),
        ({"max_steps": -1}, "max_steps must be an integer >= 0"),
        ({"cg_max_steps": 0}, "cg_max_steps must be a positive integer"),
        ({"dense_max_params": None}, "dense_max_params must be an integer >= 0"),
        ({"memory": 0}, "memory .* must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            jh.find_critical_point(loss, PARAMS, **kwargs)
    assert not calls
    # Zero steps is the start itself; NumPy counts and a NumPy tolerance are accepted.
    start = jh.find_critical_point(_loss, PARAMS, max_steps=0)
    assert int(start.num_steps) == 0
    r = jh.find_critical_point(_loss, PARAMS, max_steps=np.int64(50), tol=np.float32(1e-6), damping=np.float64(1e-3))
    assert bool(r.converged)


# ---------------------------------------------------------------------------------
# 6. probe distributions, checked when configured
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [jh.hutchinson, jh.frobenius_norm, jh.hutch_plus_plus])
def test_distribution_is_checked_when_configured(estimator):
    with pytest.raises(ValueError, match=r"unknown distribution 'gauss'.*'rademacher' or 'normal'"):
        estimator(9, distribution="gauss")


# ---------------------------------------------------------------------------------
# 7. power iteration: a zero operator, a ±λ tie
# ---------------------------------------------------------------------------------


def test_power_iteration_on_a_zero_operator():
    r = jh.power_iteration()(lambda v: jnp.zeros_like(v), jnp.ones(3))
    assert float(r.eigenvalues[0]) == 0.0
    np.testing.assert_allclose(r.eigenvectors[0], np.ones(3) / np.sqrt(3), rtol=1e-6)
    assert float(r.residuals[0]) == 0.0 and bool(r.converged[0])


def test_power_iteration_tie_is_not_converged():
    r = jh.power_iteration(k=1)(lambda v: DIAG * v, jnp.ones(5))
    assert float(r.residuals[0]) > 1.0
    assert not bool(r.converged[0])
    # A simple dominant eigenvalue still converges.
    r = jh.power_iteration(k=1)(lambda v: jnp.abs(DIAG) * jnp.array([1.0, 0.5, 1, 1, 1]) * v, jnp.ones(5))
    assert bool(r.converged[0]) and float(r.eigenvalues[0]) == pytest.approx(5.0, rel=1e-3)


# ---------------------------------------------------------------------------------
# 8. the Frobenius norm of a zero operator
# ---------------------------------------------------------------------------------


def test_frobenius_norm_of_zero_operator_has_zero_error():
    r = jh.frobenius_norm(4)(lambda v: jnp.zeros_like(v), jnp.ones(3), key=0)
    assert float(r.estimate) == 0.0 and float(r.standard_error) == 0.0


# ---------------------------------------------------------------------------------
# 9. the kernel width of the spectral density
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf")])
def test_spectral_density_refuses_a_non_positive_sigma(sigma):
    def never(v):
        raise AssertionError("no product should run")

    with pytest.raises(ValueError, match="sigma.*must be a positive finite number"):
        jh.spectral_density(never, jnp.ones(4), key=0, num_steps=2, num_probes=2, sigma=sigma)


# ---------------------------------------------------------------------------------
# 10. condition numbers with a NaN eigenvalue
# ---------------------------------------------------------------------------------


def test_condition_number_of_nan_eigenvalues_is_nan():
    lam = jnp.array([1.0, jnp.nan, 3.0])
    for definition in ("auto", "definite", "magnitude", "positive"):
        assert np.isnan(float(jh.condition_number(lam, definition=definition).value))
    assert np.isnan(float(jax.jit(lambda x: jh.condition_number(x).value)(lam)))
    batch = jnp.stack([lam, jnp.array([1.0, 2.0, 4.0])])
    values = jax.vmap(lambda x: jh.condition_number(x).value)(batch)
    assert np.isnan(float(values[0])) and float(values[1]) == pytest.approx(4.0)


# ---------------------------------------------------------------------------------
# 11. Fisher output shapes
# ---------------------------------------------------------------------------------


def test_fisher_needs_one_row_per_example():
    w = jnp.ones(3)
    seq = jnp.ones((2, 4, 3))
    with pytest.raises(ValueError, match=r"shape \(N, C\).*got shape \(2, 4, 3\).*reshape\(-1"):
        jh.fisher(lambda p, x: x * p[None, None])(w, w, seq)
    with pytest.raises(ValueError, match=r"got shape \(2,\)"):
        jh.fisher(lambda p, x: x @ p)(w, w, jnp.ones((2, 3)))
    # Reshaped as the message says, the Fisher is the mean over the N·T rows.
    flat = jh.fisher(lambda p, x: (x * p[None, None]).reshape(-1, 3))(w, w, seq)
    per_row = jh.fisher(lambda p, x: x * p[None])(w, w, jnp.ones((8, 3)))
    np.testing.assert_allclose(flat, per_row, rtol=1e-6)
    # One output per example is a Gaussian regression: F = (1/N) Xᵀ X.
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(jh.fisher(lambda p, x: x @ p, likelihood="gaussian")(w, w, x),
                               x.T @ x @ w / 2, rtol=1e-6)


# ---------------------------------------------------------------------------------
# 12. Hutch++ with a sketch wider than the dimension
# ---------------------------------------------------------------------------------


def test_hutch_plus_plus_reports_the_products_spent():
    a = jnp.diag(jnp.arange(1.0, 31.0))
    r = jh.hutch_plus_plus(99)(lambda v: a @ v, jnp.ones(30), key=0)
    # 33 sketch products, 30 for tr(QᵀAQ) (Q has only n = 30 columns), 33 probes.
    assert r.num_matvecs == 33 + 30 + 33
    assert float(r.estimate) == pytest.approx(465.0, rel=1e-5)


def test_slq_index_and_its_bounds_stay_in_the_unit_interval():
    """Every eigenvalue negative: the float32 weights sum to 1 only up to rounding,
    which put the index at 1.00000024 and the lower bound above the upper one."""
    def f(p):
        return -(p["x"] ** 2 + 3 * p["y"] ** 2 + 0.5 * jnp.sum(p["z"] ** 2))

    r = jh.critical_point_report(f, {"x": 0.0, "y": 0.0, "z": jnp.zeros(3)}, method="lanczos")
    assert 0 <= float(r.index_lower) <= float(r.index) <= float(r.index_upper) <= 1
    assert float(r.index) == pytest.approx(1.0) and r.classification == "maximum"


def test_analysis_of_one_parameter_by_lanczos_points_to_dense():
    with pytest.raises(ValueError, match="a Hessian of 1 parameter has one eigenvalue; use method='dense'"):
        jh.hessian_analysis(lambda p, d: jnp.sum(p ** 2 * d), jnp.ones(1), jnp.ones(4), method="lanczos")


# ---------------------------------------------------------------------------------
# 13. half precision in the estimators that need no eigensolver; complex leaves
# ---------------------------------------------------------------------------------


def test_half_precision_traces_sum_in_float32():
    """‖A g‖² ≈ 84 000 overflows float16 (65 504): the sums run in float32."""
    n = 400
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)) / 2 + 3 * np.eye(n), jnp.float32)
    a = (a + a.T) / 2
    a16 = a.astype(jnp.float16)

    def mv(v):
        return (a16 @ v.astype(jnp.float16)).astype(v.dtype)

    like = jnp.ones(n, jnp.float16)
    frob = jh.frobenius_norm(64)(mv, like, key=0)
    trace = jh.hutchinson(64)(mv, like, key=0)
    assert frob.estimate.dtype == trace.estimate.dtype == jnp.float32
    exact_frob, exact_trace = float(jnp.linalg.norm(a)), float(jnp.trace(a))
    assert np.isfinite(float(frob.standard_error)) and np.isfinite(float(trace.standard_error))
    assert abs(float(frob.estimate) - exact_frob) < 4 * float(frob.standard_error) + 0.01 * exact_frob
    assert abs(float(trace.estimate) - exact_trace) < 4 * float(trace.standard_error) + 0.01 * exact_trace


def test_complex_leaves_are_refused():
    z = jnp.ones(4, jnp.complex64)
    calls = [lambda: jh.hutchinson(4)(lambda v: v, z, key=0),
             lambda: jh.hutch_plus_plus(6)(lambda v: v, z, key=0),
             lambda: jh.spectral_density(lambda v: v, z, key=0, num_steps=3, num_probes=2),
             lambda: jh.lanczos(3)(lambda v: v, z)]
    for call in calls:
        with pytest.raises(TypeError, match=r"real floating-point arrays only.*complex64.*not supported"):
            call()


# ---------------------------------------------------------------------------------
# 14. the estimators' remaining settings
# ---------------------------------------------------------------------------------


def test_operator_of_the_wrong_size_is_named_by_the_trace_estimators():
    for estimator in (jh.hutchinson(4), jh.hutch_plus_plus(6), jh.frobenius_norm(4)):
        with pytest.raises(ValueError, match=r"vectors of 5 numbers .* returned 3"):
            estimator(lambda v: v[:3], jnp.ones(5), key=0)


def test_operator_of_the_wrong_size_is_named_by_the_eigensolvers():
    """SLQ, Lanczos and power iteration failed deep in tracing ("sub got
    incompatible shapes", "dot_general requires contracting dimensions")."""
    wrong = lambda v: v[:3]  # noqa: E731
    for run in (lambda: jh.lanczos(4)(wrong, jnp.ones(5)),
                lambda: jh.power_iteration(max_steps=4)(wrong, jnp.ones(5)),
                lambda: jh.stochastic_lanczos_quadrature(4, num_probes=2)(wrong, jnp.ones(5), key=0)):
        with pytest.raises(ValueError, match=r"vectors of 5 numbers .* returned 3"):
            run()


def test_density_from_quadrature_asks_for_sigma_and_condition_number_for_a_concrete_rtol():
    quad = jh.stochastic_lanczos_quadrature(4, num_probes=2)(lambda v: jnp.arange(1.0, 5.0) * v, jnp.ones(4), key=0)
    with pytest.raises(ValueError, match="needs the kernel width sigma"):
        jh.density_from_quadrature(quad, jnp.linspace(0.0, 5.0, 6), None)
    with pytest.raises(TypeError, match="rtol must be a concrete number"):
        jax.vmap(lambda r: jh.condition_number(jnp.array([1.0, 2.0]), rtol=r).value)(jnp.array([0.1, 0.2]))


def test_density_grid_and_probe_batch_are_checked():
    def never(v):
        raise AssertionError("no product should run")

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="probe_batch_size must be a positive integer"):
            jh.stochastic_lanczos_quadrature(3, num_probes=2, probe_batch_size=bad)
    for grid in (jnp.ones((3, 2)), jnp.ones(0), 1.0):
        with pytest.raises(ValueError, match="grid must be a 1-D array"):
            jh.spectral_density(never, jnp.ones(4), key=0, num_steps=2, num_probes=2, grid=grid)
    with pytest.raises(ValueError, match="no numbers"):
        jh.spectral_density(never, {"w": jnp.ones(0)}, key=0, num_steps=2, num_probes=2)
    # grid_size=1 gave one point at the left edge of the spectrum, a density of about 0 there
    with pytest.raises(ValueError, match="grid_size must be an integer >= 2"):
        jh.spectral_density(never, jnp.ones(4), key=0, num_steps=2, num_probes=2, grid_size=1)
    # An integer grid (or a list) is evaluated in the nodes' dtype: σ = 0.5 is not truncated to 0.
    quad = jh.stochastic_lanczos_quadrature(4, num_probes=2)(lambda v: jnp.arange(1.0, 5.0) * v, jnp.ones(4),
                                                              key=0)
    dense = jh.density_from_quadrature(quad, jnp.linspace(0.0, 5.0, 6), 0.5)
    np.testing.assert_allclose(jh.density_from_quadrature(quad, jnp.arange(0, 6), 0.5), dense, rtol=1e-6)
    np.testing.assert_allclose(jh.density_from_quadrature(quad, [0, 1, 2, 3, 4, 5], 0.5), dense, rtol=1e-6)


@pytest.mark.parametrize("rtol", [-1.0, float("nan"), float("inf")])
def test_condition_number_checks_its_threshold(rtol):
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        jh.condition_number(jnp.array([-1.0, 0.5, 2.0]), rtol=rtol)


def test_analysis_checks_every_count_before_any_stage():
    stages = []
    for bad in ({"trace_matvecs": 2}, {"num_probes": 0}, {"num_steps": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            jh.hessian_analysis(lambda p, d: jnp.sum(p ** 2 * d[:, None]), jnp.ones(3), jnp.ones(4),
                                progress=stages.append, **bad)
    assert stages == []


# ---------------------------------------------------------------------------------
# power iteration: residuals of the operator itself, a traced tolerance
# ---------------------------------------------------------------------------------


def test_power_iteration_reports_the_residual_of_the_operator_not_the_deflated_one():
    """With k > 1 the residual was ‖(I − P) A v − λ v‖: the part of A v along
    an inexact earlier vector went unseen (0.096 reported, 0.19 true)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
        a = q @ np.diag(np.r_[10.0, 9.0, 8.5, rng.uniform(0, 5, 37)]) @ q.T
        v0 = rng.standard_normal(40)
        r = jh.power_iteration(k=2)(lambda v, m: m @ v, jnp.asarray(v0), jnp.asarray(a))
        vectors, values = np.asarray(r.eigenvectors), np.asarray(r.eigenvalues)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(values, np.einsum("ij,jk,ik->i", vectors, a, vectors), rtol=1e-12)
        true = np.linalg.norm(vectors @ a - values[:, None] * vectors, axis=1)
        np.testing.assert_allclose(r.residuals, true, rtol=1e-10)
        # `converged` reads the true residual: here the second pair's is 1.24 times the
        # bound max(√tol, √ε) · max|λ| (its deflated residual was within it: "converged").
        rng = np.random.default_rng(1)
        q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        a = q @ np.diag(rng.uniform(-10, 10, 6)) @ q.T    # eigenvalues 0.57 -0.81 -8.75 2.83 7.05 1.86
        v0 = rng.standard_normal(6)
        r = jh.power_iteration(k=2, tol=1e-2)(lambda v, m: m @ v, jnp.asarray(v0), jnp.asarray(a))
        vectors, values = np.asarray(r.eigenvectors), np.asarray(r.eigenvalues)
        true = np.linalg.norm(vectors @ a - values[:, None] * vectors, axis=1)
        np.testing.assert_allclose(r.residuals, true, rtol=1e-10)
        np.testing.assert_array_equal(r.converged, true <= np.sqrt(1e-2) * np.abs(values).max())
        assert not bool(r.converged[1])


def test_power_iteration_takes_a_traced_tolerance():
    """A sweep over tolerances under jit or vmap (float(tol) raised a ConcretizationTypeError)."""
    with jax.enable_x64(True):
        a = jnp.diag(jnp.arange(1.0, 11.0))

        def top(tol):
            return jh.power_iteration(tol=tol, max_steps=500)(lambda v: a @ v, jnp.ones(10))

        for tol in (1e-3, 1e-8):
            traced, plain = jax.jit(top)(tol), top(tol)
            np.testing.assert_allclose(traced.eigenvalues, plain.eigenvalues, rtol=1e-12)
            assert int(traced.num_matvecs) == int(plain.num_matvecs)
            assert bool(traced.converged[0]) == bool(plain.converged[0])
        swept = jax.vmap(top)(jnp.array([1e-3, 1e-8]))
        assert int(swept.num_matvecs[0]) < int(swept.num_matvecs[1])
        assert float(swept.eigenvalues[1, 0]) == pytest.approx(10.0, rel=1e-7)


def test_auto_method_falls_back_to_lanczos_when_the_dense_hessian_would_not_fit(monkeypatch):
    """method="auto" was documented as dense "if it fits in memory" but chose by
    parameter count alone, then raised MemoryError."""
    import jdl.hessian.operators as operators

    monkeypatch.setattr(operators, "available_memory", lambda *a: 10_000)  # 2·40²·4 bytes do not fit
    w = jnp.linspace(-1.0, 1.0, 40)
    loss = lambda p, batch: jnp.mean((batch["x"] @ p) ** 2) + 0.5 * jnp.sum(p**2)  # noqa: E731
    data = {"x": jnp.eye(40)[:8] * 3.0, "y": jnp.zeros(8)}
    result = jh.hessian_analysis(loss, w, data, top_k=1, num_steps=40, num_probes=2, trace_matvecs=6,
                                 method="auto", dense_max_params=10**6)
    assert result.method == "lanczos"
    with pytest.raises(MemoryError):
        jh.hessian_analysis(loss, w, data, top_k=1, num_steps=40, num_probes=2, trace_matvecs=6, method="dense")


def _flagged_loss(p, train):
    """A loss with a Python flag among its arguments (as a model's train/eval switch)."""
    w = p["a"]["w"]
    return jnp.sum(w**2) - (0.5 * w[0] ** 2 if train else 0.0)


def test_non_array_loss_arguments_are_held_fixed_by_every_entry_point():
    # block_eigenvalues (Lanczos), critical_point_report and escape_saddle jitted
    # the flag into a tracer (TracerBoolConversionError); the dense path did not.
    p = {"a": {"w": jnp.ones(3)}}
    dense = jh.block_eigenvalues(_flagged_loss, p, True, block="a", method="dense")
    np.testing.assert_allclose(dense, [1.0, 2.0, 2.0], rtol=1e-6)
    lanczos = jh.block_eigenvalues(_flagged_loss, p, True, block="a", method="lanczos", k=1, num_steps=3)
    np.testing.assert_allclose(lanczos, [1.0, 2.0], rtol=1e-5)
    assert jh.critical_point_report(_flagged_loss, p, True).classification == "minimum"
    assert jh.critical_point_report(_flagged_loss, p, False).lambda_min == pytest.approx(2.0, rel=1e-5)
    step = jh.escape_saddle(_flagged_loss, p, True)  # along e₀ (curvature 1): w₀ = 1 → 0 lowers the loss
    assert step.escaped and float(step.params["a"]["w"][0]) == pytest.approx(0.0, abs=1e-6)


def test_settings_captured_as_concrete_arrays_inside_jit_are_checked_not_traced():
    # A concrete array closed over inside jax.jit made the checks' comparisons traced.
    saddle = lambda x: 5 * x[0] ** 2 - x[1] ** 2  # noqa: E731
    sizes, longest = jnp.array([1.0, 0.5]), jnp.asarray(2.0)
    assert jax.jit(lambda x: jh.escape_saddle(saddle, x, step_sizes=sizes))(jnp.zeros(2)).escaped
    assert jax.jit(lambda x: jh.escape_saddle(saddle, x, max_step=longest))(jnp.zeros(2)).escaped
    tol = jnp.asarray(1e-4)
    assert jax.jit(lambda x: jh.find_critical_point(saddle, x, tol=tol))(jnp.array([0.3, 0.2])).converged
    rtol = jnp.asarray(1e-3)
    assert float(jax.jit(lambda lam: jh.condition_number(lam, rtol=rtol).value)(jnp.array([1.0, 2.0]))) == 2.0
    bad = jnp.array([1.0, -0.5])
    with pytest.raises(ValueError, match="step_sizes must be positive and finite"):
        jax.jit(lambda x: jh.escape_saddle(saddle, x, step_sizes=bad))(jnp.zeros(2))


def test_condition_number_refuses_an_rtol_that_excludes_every_eigenvalue():
    with pytest.raises(ValueError, match="rtol must be below 1"):
        jh.condition_number(jnp.array([1.0, 2.0]), rtol=5.0)
    assert float(jh.condition_number(jnp.array([1.0, 2.0]), rtol=0.9).value) == 1.0


def test_find_critical_point_refuses_float16_cg_and_stops_at_a_non_finite_start():
    saddle = lambda x: 5 * x[0] ** 2 - x[1] ** 2  # noqa: E731
    with pytest.raises(TypeError, match="float16"):  # CG returned δ = 0 and the run stopped "stuck"
        jh.find_critical_point(saddle, jnp.array([0.3, 0.2], jnp.float16), solver="cg")
    r = jh.find_critical_point(saddle, jnp.array([jnp.nan, 0.2]), max_steps=50)
    assert int(r.num_steps) == 0 and not bool(r.converged)  # it ran all 50 solves, accepting none


def test_slices_normalise_a_half_precision_direction_without_overflow():
    # ‖d‖² of 70 000 ones overflows float16: refused eagerly, and under jit the
    # direction became 0 and the slice the constant L(θ).
    n = 70_000
    params, direction = jnp.zeros(n, jnp.float16), jnp.ones(n, jnp.float16)
    quadratic = lambda p: jnp.sum(p.astype(jnp.float32) ** 2)  # noqa: E731 — along a unit d: α²
    alphas = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(jh.loss_slice(quadratic, params, direction, alphas=alphas), [1.0, 4.0], rtol=2e-3)
    traced = jax.jit(lambda d: jh.loss_slice(quadratic, params, d, alphas=alphas))(direction)
    np.testing.assert_allclose(traced, [1.0, 4.0], rtol=2e-3)


def test_hessian_analysis_residuals_follow_the_eigenvalues_and_gradient_tol_is_checked():
    # The residuals came bottom end first (ascending), then the top end ascending, while
    # top_eigenvalues is descending: pairing residuals[:k] with the top ones paired wrong ends.
    # Here the top end (9, 7: far apart) converges in a few steps and the clustered bottom
    # end (−2, −1.99, −1.98) does not.
    with jax.enable_x64(True):
        lam = jnp.concatenate([jnp.array([-2.0, -1.99, -1.98]), jnp.linspace(0.1, 1.0, 40), jnp.array([7.0, 9.0])])
        loss = lambda p, d: 0.5 * jnp.sum(lam * p**2) * jnp.mean(d)  # noqa: E731
        a = jh.hessian_analysis(loss, jnp.zeros(45), jnp.ones(4), method="lanczos", top_k=2, num_steps=12,
                                num_probes=2, trace_matvecs=6)
        np.testing.assert_allclose(a.top_eigenvalues, [9.0, 7.0], rtol=1e-6)
        top, bottom = a.eigenvalue_residuals[:2], a.eigenvalue_residuals[2:]
        assert float(jnp.max(top)) < 1e-3 * float(jnp.min(bottom))
        with pytest.raises(ValueError, match="gradient_tol must be a finite number >= 0"):
            jh.hessian_analysis(loss, jnp.zeros(45), jnp.ones(4), gradient_tol=-1.0)


# --- from a review of `jdl hessian` and the plots ------------------------------------------


def _quadratic(scale=1.0):
    lam = jnp.linspace(-1.0, 3.0, 40)
    return lambda p, d: 0.5 * scale * jnp.sum(lam * p**2) * jnp.mean(d)


def test_analysis_stops_after_the_gradient_when_the_loss_is_not_finite():
    # A diverged checkpoint ran every stage and printed an index of 0 from NaNs.
    stages = []
    with pytest.raises(ValueError, match=r"the loss is (nan|inf) .*not finite.*analyse an earlier checkpoint"):
        jh.hessian_analysis(_quadratic(np.inf), jnp.ones(40), jnp.ones(4), method="lanczos", num_steps=20,
                            progress=stages.append)
    assert stages == ["loss and gradient"]


def test_dense_analysis_checks_memory_before_any_work(monkeypatch):
    import jdl.hessian.operators as ops

    calls = []
    monkeypatch.setattr(ops, "available_memory", lambda device=None: 1000)
    with pytest.raises(MemoryError, match="dense Hessian of 40 parameters"):
        jh.hessian_analysis(lambda p, d: calls.append(1) or _quadratic()(p, d), jnp.ones(40), jnp.ones(4),
                            method="dense")
    assert calls == []  # the loss was not even traced


def test_slq_probes_are_batched_to_fit_in_memory_and_one_basis_too_large_is_refused(monkeypatch):
    import jdl.hessian.analysis as analysis

    seen = []
    original = analysis.spectral_density
    monkeypatch.setattr(analysis, "spectral_density", lambda *a, **kw: seen.append(kw["probe_batch_size"])
                        or original(*a, **kw))
    per_probe = 21 * 40 * 4  # (num_steps + 1) × n float32 numbers
    monkeypatch.setattr(analysis, "available_memory", lambda: 2 * 3 * per_probe)  # half of it holds 3 bases
    jh.hessian_analysis(_quadratic(), jnp.ones(40), jnp.ones(4), method="lanczos", num_steps=20, num_probes=10,
                        top_k=2, trace_matvecs=8)
    assert seen == [3]
    monkeypatch.setattr(analysis, "available_memory", lambda: per_probe)
    with pytest.raises(MemoryError, match=r"one Lanczos basis of 21 × 40 numbers .* lower num_steps"):
        jh.hessian_analysis(_quadratic(), jnp.ones(40), jnp.ones(4), method="lanczos", num_steps=20)


def test_density_plot_refuses_non_finite_values_and_keeps_to_the_spectrum(tmp_path):
    lam = jnp.linspace(100.0, 101.0, 30)
    density = jh.spectral_density(lambda v: lam * v, jnp.ones(30), key=0, num_steps=30, num_probes=2)
    fig = jh.plot_spectral_density(density, eigenvalues=np.asarray(lam))
    low, high = fig.axes[0].get_xlim()
    assert low > 90  # the zero line had stretched the axis to 0, squashing the spectrum to a sliver
    assert not fig.axes[0].patches  # 30 eigenvalues: ticks at their values, not a histogram's bars
    with pytest.raises(ValueError, match="not finite"):
        jh.plot_spectral_density(density, tmp_path / "x.png", eigenvalues=[1.0, np.inf, 2.0])
    assert not (tmp_path / "x.png").exists()
