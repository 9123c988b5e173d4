"""Spectral density (SLQ), trace estimators and condition numbers against exact
spectra, closed-form Hessians and repeated sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.data.datasets import load_digits_arrays
from jdl.hessian import (
    condition_number,
    dense_hessian,
    density_from_quadrature,
    frobenius_norm,
    hessian_operator,
    hutch_plus_plus,
    hutchinson,
    model_objective,
    plot_spectral_density,
    spectral_density,
    stochastic_lanczos_quadrature,
)
from jdl.models import get_model
from jdl.nn import cross_entropy


def _matvec(v, a):
    return a @ v


def _known_matrix(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(q @ np.diag(eigenvalues) @ q.T)


def _smoothed(eigenvalues, grid, sigma):
    z = (np.asarray(grid)[:, None] - np.asarray(eigenvalues)[None, :]) / sigma
    return np.mean(np.exp(-0.5 * z * z), axis=1) / (sigma * np.sqrt(2 * np.pi))


def _l1(p, q, grid):
    return float(np.sum(np.abs(p - q)) * (grid[1] - grid[0]))


def test_slq_matches_exact_histogram_of_known_spectrum(tmp_path):
    rng = np.random.default_rng(1)
    eig = np.concatenate([rng.normal(0.0, 0.3, 350), rng.normal(4.0, 0.2, 40), [9.0, 12.0]])
    with jax.enable_x64(True):
        a = _known_matrix(eig)
        dens = jax.jit(lambda a: spectral_density(_matvec, jnp.zeros(eig.size), a, key=0, num_steps=60,
                                                  num_probes=20, sigma=0.15))(a)
        grid = np.asarray(dens.grid)
        exact = _smoothed(eig, grid, 0.15)
        assert _l1(np.asarray(dens.density), exact, grid) < 0.1
        assert float(jnp.sum(dens.density) * (grid[1] - grid[0])) == pytest.approx(1.0, abs=1e-3)
        assert dens.num_probes == 20 and dens.num_steps == 60 and float(dens.sigma) == 0.15
        assert int(dens.num_matvecs) == 1200
        # Extreme nodes are the extreme eigenvalues; mass below 2 ≈ 350/392.
        assert float(jnp.max(dens.quadrature.nodes)) == pytest.approx(12.0, abs=1e-8)
        assert float(dens.quadrature.fraction_below(2.0)) == pytest.approx(350 / 392, abs=0.03)
        assert float(dens.quadrature.trace_per_dimension()) == pytest.approx(eig.mean(), rel=0.05)
        # A finer kernel on the same nodes, evaluated on a user grid.
        fine = density_from_quadrature(dens.quadrature, jnp.linspace(-2, 14, 400), 0.5)
        assert fine.shape == (400,)
    path = plot_spectral_density(dens, str(tmp_path / "density.png"), eigenvalues=eig)
    assert path is not None and (tmp_path / "density.png").stat().st_size > 10_000


def test_slq_matches_small_network_dense_hessian():
    images, labels = load_digits_arrays()
    batch = {"x": jnp.asarray(images.reshape(-1, 64)[:200] / 16.0), "y": jnp.asarray(labels[:200])}
    model = get_model("mlp", (64,), 10, hidden=(8,))
    v = model.init(jax.random.key_data(jax.random.key(3)), batch["x"][:2])
    loss = model_objective(model, cross_entropy, v.model_state, train=False).loss
    eig = np.linalg.eigvalsh(np.asarray(jax.jit(lambda p, b: dense_hessian(loss, p, b))(v.params, batch)))
    dens = jax.jit(lambda p, b: spectral_density(hessian_operator(loss), p, p, b, key=1, num_steps=60,
                                                 num_probes=10))(v.params, batch)
    grid = np.asarray(dens.grid)
    exact = _smoothed(eig, grid, float(dens.sigma))
    assert float(dens.sigma) == pytest.approx(0.01 * (eig.max() - eig.min()), rel=1e-3)
    assert _l1(np.asarray(dens.density), exact, grid) < 0.25
    # Index from the quadrature mass below zero, against the exact fraction (threshold
    # a few kernel widths below 0, where SLQ's node spacing resolves it).
    t = -3 * float(dens.sigma)
    assert float(dens.quadrature.fraction_below(t)) == pytest.approx(np.mean(eig < t), abs=0.03)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("value", [3.0, 100.0, -0.5, 0.0])
def test_density_of_a_single_eigenvalue_is_a_visible_peak(value, dtype, tmp_path):
    """``c · I``: every node is ``c``. A default kernel of 1 % of the nodes'
    span (zero) would fall between representable numbers; the density is a
    peak at ``c`` on a grid of distinct points that integrates to 1."""
    with jax.enable_x64(dtype == jnp.float64):
        dens = spectral_density(lambda v: value * v, jnp.zeros(40, dtype), key=0, num_steps=8, num_probes=2)
        grid, density = np.asarray(dens.grid, np.float64), np.asarray(dens.density, np.float64)
    assert dens.grid.dtype == dtype and float(dens.sigma) > 0
    assert len(np.unique(grid)) == grid.size
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-4)
    assert grid[np.argmax(density)] == pytest.approx(value, abs=0.1 * float(dens.sigma))   # within a grid step (0.11 σ)
    assert plot_spectral_density(dens, str(tmp_path / "d.png")) is not None


def test_density_keeps_a_narrow_spectrum_far_from_zero():
    """Eigenvalues 1e-8 and 2e-8 (float32): a span far below 1 but well above
    the float spacing keeps its own 1 % kernel, and shows two peaks."""
    scale = jnp.where(jnp.arange(40) < 20, 1e-8, 2e-8).astype(jnp.float32)
    dens = spectral_density(lambda v: scale * v, jnp.zeros(40, jnp.float32), key=0, num_steps=8, num_probes=2)
    assert float(dens.sigma) == pytest.approx(1e-10, rel=1e-3)
    grid, density = np.asarray(dens.grid, np.float64), np.asarray(dens.density, np.float64)
    peaks = grid[1:-1][(density[1:-1] > density[:-2]) & (density[1:-1] >= density[2:])]
    np.testing.assert_allclose(peaks, [1e-8, 2e-8], rtol=1e-2)


def test_density_warns_when_the_grid_is_coarser_than_the_kernel():
    a = jnp.diag(jnp.arange(50.0))
    with pytest.warns(UserWarning, match="more than twice the kernel width"):
        dens = spectral_density(_matvec, jnp.zeros(50), a, key=0, num_steps=50, num_probes=2, sigma=1e-3)
    integral = float(jnp.sum(dens.density) * (dens.grid[1] - dens.grid[0]))
    assert abs(integral - 1) > 0.1   # what the warning is about
    with pytest.warns(UserWarning, match="more than twice"):
        spectral_density(_matvec, jnp.zeros(50), a, key=0, num_steps=50, num_probes=2, sigma=0.5,
                         grid=jnp.linspace(0, 49, 20))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectral_density(_matvec, jnp.zeros(50), a, key=0, num_steps=50, num_probes=2)
        spectral_density(_matvec, jnp.zeros(50), a, key=0, num_steps=50, num_probes=2, sigma=0.5)


def test_index_bounds_contain_the_exact_fraction_that_slq_misses():
    """Near a dense cluster (a network Hessian's near-zero bulk at the index's
    −τ) SLQ's fraction below a threshold is biased by far more than its
    standard error; the Chebyshev–Markov–Stieltjes bounds contain the exact
    fraction at every step count and narrow with more steps.

    A diagonal matrix with Rademacher probes makes every probe's spectral
    measure the uniform one, so the bounds must hold for each probe exactly,
    and the standard error over probes is zero.
    """
    rng = np.random.default_rng(0)
    eig = np.concatenate([rng.uniform(-1.0, -0.05, 60), rng.uniform(-0.02, 0.02, 400), rng.uniform(0.05, 5.0, 140)])
    t = -0.005
    exact = np.mean(eig < t)
    errors, widths = [], []
    with jax.enable_x64(True):
        a = jnp.diag(jnp.asarray(eig))
        for steps in (10, 20, 40, 80, 200):
            q = jax.jit(lambda a, steps=steps: stochastic_lanczos_quadrature(steps, num_probes=4)(
                _matvec, jnp.zeros(eig.size), a, key=steps))(a)
            lower, upper = (float(b) for b in q.fraction_below_bounds(t))
            assert lower - 1e-12 <= exact <= upper + 1e-12, (steps, lower, exact, upper)
            assert float(q.fraction_below_standard_error(t)) < 1e-12
            errors.append(abs(float(q.fraction_below(t)) - exact))
            widths.append(upper - lower)
        # Far from the cluster the quadrature resolves the count and the bounds are tight.
        lower, upper = (float(b) for b in q.fraction_below_bounds(2.5))
    assert max(errors) > 0.3           # the bias the standard error does not show
    assert widths[-1] < 0.5 * widths[0]
    assert lower <= np.mean(eig < 2.5) <= upper and upper - lower < 0.02


def test_index_bounds_close_on_an_invariant_krylov_space():
    """Three distinct eigenvalues: each probe's Krylov space is invariant after
    three steps, its Gauss rule *is* its spectral measure, and the bounds close
    on the exact fraction (the restarted space's nodes weigh nothing). A
    threshold at an eigenvalue, where rounding puts that eigenvalue's nodes on
    either side, leaves the bounds around it."""
    eig = np.concatenate([np.full(50, -1.0), np.zeros(100), np.full(30, 2.0)])
    with jax.enable_x64(True):
        q = stochastic_lanczos_quadrature(12, num_probes=4)(_matvec, jnp.zeros(eig.size), jnp.diag(jnp.asarray(eig)),
                                                            key=0)
        assert bool(jnp.all(q.exact)) and int(jnp.sum(q.weights[0] > 1e-12)) == 3
        for t in (-2.0, -0.5, 0.5, 3.0):
            assert [float(b) for b in q.fraction_below_bounds(t)] == pytest.approx([np.mean(eig < t)] * 2, abs=1e-12)
        lower, upper = (float(b) for b in q.fraction_below_bounds(0.0))
        assert lower == pytest.approx(50 / 180) and upper == pytest.approx(150 / 180)
        # A run too short to become invariant keeps the quadrature's bounds.
        short = stochastic_lanczos_quadrature(2, num_probes=4)(_matvec, jnp.zeros(eig.size),
                                                               jnp.diag(jnp.asarray(eig)), key=0)
        assert not bool(jnp.any(short.exact))
        lower, upper = (float(b) for b in short.fraction_below_bounds(-0.5))
        assert lower <= 50 / 180 <= upper and upper - lower > 0.1


def _decaying_matrix():
    n = 100
    eig = 100.0 * np.arange(1, n + 1, dtype=np.float64) ** -1.5
    return _known_matrix(eig, seed=2), eig.sum()


def test_hutchinson_and_hutch_plus_plus_are_unbiased_and_hutch_pp_is_better():
    with jax.enable_x64(True):
        a, exact = _decaying_matrix()
        keys = jnp.arange(400)
        run = lambda est: jax.jit(jax.vmap(lambda k: est(_matvec, jnp.zeros(100), a, key=k)))(keys)  # noqa: E731
        h = run(hutchinson(30))
        hpp = run(hutch_plus_plus(30))
        for r in (h, hpp):
            mean = float(jnp.mean(r.estimate))
            se_of_mean = float(jnp.std(r.estimate)) / np.sqrt(400)
            assert abs(mean - exact) < 4 * se_of_mean, (mean, exact, se_of_mean)
            # The reported standard error matches the actual spread of the estimates.
            assert float(jnp.mean(r.standard_error)) == pytest.approx(float(jnp.std(r.estimate)), rel=0.35)
        rms = lambda r: float(jnp.sqrt(jnp.mean((r.estimate - exact) ** 2)))  # noqa: E731
        assert rms(hpp) < 0.5 * rms(h)
        assert int(h.num_matvecs[0]) == int(hpp.num_matvecs[0]) == 30


def test_frobenius_norm_estimate():
    with jax.enable_x64(True):
        a, _ = _decaying_matrix()
        r = frobenius_norm(200)(_matvec, jnp.zeros(100), a, key=3)
        exact = float(jnp.linalg.norm(a))
        assert abs(float(r.estimate) - exact) < 4 * float(r.standard_error) + 1e-12
    with pytest.raises(ValueError, match="num_matvecs"):
        hutch_plus_plus(2)


def test_trace_estimators_refuse_a_product_not_shaped_like_its_input():
    # A product with transposed leaves has the right size, so it was flattened in
    # another order: the trace of a permuted operator, returned without a word.
    like = {"a": jnp.zeros((2, 3))}
    transposed = lambda v: {"a": v["a"].T}  # noqa: E731
    renamed = lambda v: {"b": v["a"]}  # noqa: E731
    for estimator in (hutchinson(4), hutch_plus_plus(6), frobenius_norm(4)):
        with pytest.raises(ValueError, match=r"leaf of shape \(3, 2\) for an input leaf of shape \(2, 3\)"):
            estimator(transposed, like, key=0)
        with pytest.raises(ValueError, match="pytree shaped like its input"):
            estimator(renamed, like, key=0)


def test_condition_number_definitions():
    c = condition_number(jnp.array([2.0, 5.0, 100.0]))
    assert (c.definition, float(c.value)) == ("definite", 50.0)
    c = condition_number(jnp.array([-4.0, 1e-9, 2.0, 20.0]))
    assert c.definition == "magnitude" and float(c.value) == pytest.approx(10.0) and int(c.num_excluded) == 1
    c = condition_number(jnp.array([-4.0, 1e-9, 2.0, 20.0]), definition="positive")
    assert float(c.value) == pytest.approx(10.0) and int(c.num_excluded) == 2
    assert np.isinf(float(condition_number(jnp.array([-1.0, 3.0]), definition="definite").value))
    assert np.isinf(float(condition_number(jnp.array([0.0, 3.0]), definition="magnitude", rtol=0.0).value))
    with pytest.raises(ValueError, match="definition"):
        condition_number(jnp.array([1.0]), definition="spectral")
    # The default threshold is the numerical-rank one, n·ε: a float32 κ of 1e5
    # is resolved, not cut off (√ε ≈ 3.5e-4 would have cut it).
    c = condition_number(jnp.array([1e-5, 1.0], jnp.float32))
    assert c.definition == "definite" and float(c.value) == pytest.approx(1e5, rel=1e-5)
    assert c.rtol == pytest.approx(2 * np.finfo(np.float32).eps)
    # Under jit and vmap (an ensemble's spectra): "auto" picks per member.
    spectra = jnp.array([[2.0, 5.0, 100.0], [-4.0, 2.0, 20.0]])
    batched = jax.jit(jax.vmap(condition_number))(spectra)
    np.testing.assert_allclose(batched.value, [50.0, 10.0])
    np.testing.assert_array_equal(batched.definite, [True, False])
    assert batched.definition == "auto"


def test_standardising_inputs_lowers_logistic_regression_condition_number():
    """Seed 004 §3.1.1: preconditioning the inputs makes the problem better conditioned."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        n = 400
        z = rng.normal(size=(n, 3))
        x = np.stack([50 + 10 * z[:, 0], 0.01 * z[:, 1], 3 + z[:, 2]], axis=1)   # offsets and scales
        y = (z @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=n) > 0).astype(np.float64)

        def loss(w, x):
            logits = x @ w["w"] + w["b"]
            return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

        def hessian(x):
            x = jnp.asarray(x)
            w = {"b": jnp.zeros(()), "w": jnp.zeros(3)}
            h = dense_hessian(loss, w, x)
            # Closed form: H = (1/N) X̃ᵀ diag(p(1−p)) X̃ with X̃ = [1, x].
            xt = jnp.concatenate([jnp.ones((n, 1)), x], axis=1)
            np.testing.assert_allclose(h, xt.T @ (xt * 0.25) / n, rtol=1e-10, atol=1e-12)
            return jnp.linalg.eigvalsh(h)

        raw = condition_number(hessian(x))
        standardised = condition_number(hessian((x - x.mean(0)) / x.std(0)))
        assert raw.definition == standardised.definition == "definite"
        assert float(raw.value) > 1e5
        assert float(standardised.value) < 2.0    # ≈ 1: the covariance of whitened features
