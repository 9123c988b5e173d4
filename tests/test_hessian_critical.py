"""Critical points, saddles, layer blocks and landscape slices on closed forms
(float64, scoped) and on a small network at a known saddle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.hessian import (
    block_eigenvalues,
    classify_curvature,
    critical_point_report,
    critical_point_summary,
    dense_hessian,
    dense_spectrum,
    escape_saddle,
    find_critical_point,
    loss_slice,
    loss_surface,
    parameter_blocks,
    plot_loss_slice,
    plot_loss_surface,
)


def saddle(p):            # H = diag(10, −2)
    return 5 * p[0] ** 2 - p[1] ** 2


def monkey(p):            # H = 0 at the origin: degenerate
    return p[0] ** 3 - 3 * p[0] * p[1] ** 2


def rosenbrock(p):        # minimum at (1, 1), H = [[802, −400], [−400, 200]]
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def _quadratic(seed=0):
    """½ xᵀ A x − bᵀ x with eigenvalues −3, −1, 0.5 … 6 (index 2/12)."""
    rng = np.random.default_rng(seed)
    eig = np.array([-3.0, -1.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 4.5, 5.0, 6.0])
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    a = q @ np.diag(eig) @ q.T
    b = rng.normal(size=12)
    return jnp.asarray(a), jnp.asarray(b), eig, np.linalg.solve(a, b)


def test_saddle_5x2_minus_y2():
    with jax.enable_x64(True):
        found = find_critical_point(saddle, jnp.array([0.3, -0.2]))
        assert bool(found.converged)
        np.testing.assert_allclose(found.params, [0.0, 0.0], atol=1e-12)
        r = critical_point_report(saddle, jnp.zeros(2))
        assert r.method == "dense" and r.classification == "saddle" and r.is_critical
        assert float(r.lambda_min) == pytest.approx(-2.0) and float(r.lambda_max) == pytest.approx(10.0)
        assert float(r.index) == 0.5
        np.testing.assert_allclose(r.eigenvalues, [-2, 10])
        esc = escape_saddle(saddle, jnp.zeros(2))
        assert bool(esc.escaped) and float(esc.loss_after) < 0.0
        assert float(esc.eigenvalue) == pytest.approx(-2.0)
        np.testing.assert_allclose(jnp.abs(esc.direction), [0.0, 1.0], atol=1e-10)


def test_monkey_saddle_is_degenerate():
    with jax.enable_x64(True):
        r = critical_point_report(monkey, jnp.zeros(2))
        assert r.classification == "degenerate" and r.is_critical
        assert float(r.lambda_min) == float(r.lambda_max) == 0.0
        found = find_critical_point(monkey, jnp.array([0.3, 0.1]), max_steps=200)
        assert bool(found.converged) and float(jnp.linalg.norm(found.params)) < 1e-6
        # Near the origin the Hessian is ±6r: with an absolute tolerance stated, still degenerate.
        near = critical_point_report(monkey, found.params, eigenvalue_atol=1e-5)
        assert near.classification == "degenerate"
        assert classify_curvature(-1e-3, 1e-3, 1e-5) == "saddle"
        # An ensemble's extreme eigenvalues at once, elementwise.
        np.testing.assert_array_equal(
            classify_curvature(np.array([-1.0, 1.0, -3.0, 0.0]), np.array([2.0, 3.0, -1.0, 1.0]), 0.1),
            ["saddle", "minimum", "maximum", "degenerate"])


@pytest.mark.parametrize("solver", ["dense", "cg"])
@pytest.mark.parametrize("start", [(-1.2, 1.0), (0.0, 0.0), (2.0, 2.0)])
def test_rosenbrock_minimum(start, solver):
    """Both solvers; the matrix-free one scales its damping by ‖H‖² estimated
    by power steps (by ‖Hg‖²/‖g‖² it stalled in the valley: (−3.99, 15.97)
    after 3 000 steps from (−1.2, 1))."""
    with jax.enable_x64(True):
        found = jax.jit(lambda x: find_critical_point(rosenbrock, x, solver=solver))(jnp.array(start))
        np.testing.assert_allclose(found.params, [1.0, 1.0], atol=1e-10)
        # 10 ε (1 + |L|) = 2.2e-15 lies below the gradient's rounding one ulp from
        # (1, 1), ε ‖H‖ ‖x‖ ≈ 3e-13: a run that stops there, stuck, has converged
        # (the matrix-free one from (2, 2) ends at (1, 1 − 1e-16), ‖∇L‖ = 5e-14).
        assert bool(found.converged) and float(found.gradient_norm) < 3e-13
        assert int(found.num_steps) < 100
        r = critical_point_report(rosenbrock, found.params)
        assert r.classification == "minimum"
        np.testing.assert_allclose(r.eigenvalues, np.linalg.eigvalsh([[802.0, -400.0], [-400.0, 200.0]]),
                                   rtol=1e-8)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_finder_converges_at_the_rounding_floor_and_not_before_it(solver):
    """float32: the default tolerance admits the gradient's rounding only once no
    step moves the point; along a flat direction, far from zero, the gradient is
    exact enough to go on (stopping at ε ‖H‖ ‖x‖ ≈ 0.4 would leave x₁ 0.4 off)."""
    curvature, centre = jnp.array([1.0, 1000.0]), jnp.array([1000.0, -3000.0])
    found = find_critical_point(lambda x: 0.5 * jnp.sum(curvature * (x - centre) ** 2), jnp.zeros(2),
                                solver=solver)
    assert bool(found.converged)
    np.testing.assert_allclose(found.params, centre, rtol=1e-6)
    for start in ((-1.2, 1.0), (0.0, 0.0), (2.0, 2.0)):
        found = find_critical_point(rosenbrock, jnp.array(start), solver=solver)
        assert bool(found.converged), (start, float(found.gradient_norm))
        np.testing.assert_allclose(found.params, [1.0, 1.0], atol=1e-3)
    with jax.enable_x64(True):  # ends stuck at ‖∇L‖ = 5e-14 (cg), or exactly at the minimum
        given = find_critical_point(rosenbrock, jnp.array([2.0, 2.0]), solver=solver, tol=1e-30)
    assert bool(given.converged) == (float(given.gradient_norm) <= 1e-30)  # a given tol is never loosened


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_quadratic_with_known_spectrum(solver):
    with jax.enable_x64(True):
        a, b, eig, x_star = _quadratic()
        f = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
        found = find_critical_point(f, jnp.zeros(12), solver=solver)
        assert bool(found.converged)
        np.testing.assert_allclose(found.params, x_star, atol=1e-9)
        r = critical_point_report(f, found.params, method="dense")
        np.testing.assert_allclose(r.eigenvalues, eig, atol=1e-10)
        assert r.classification == "saddle" and float(r.index) == pytest.approx(2 / 12)
        if solver == "cg":   # the matrix-free report: Lanczos ends, SLQ index
            lz = critical_point_report(f, found.params, method="lanczos", num_steps=12, num_probes=30)
            assert lz.classification == "saddle"
            assert float(lz.lambda_min) == pytest.approx(-3.0) and float(lz.lambda_max) == pytest.approx(6.0)
            assert abs(float(lz.index) - 2 / 12) < 4 * float(lz.index_standard_error) + 1e-9
            # 12 steps span the space: each probe's rule is its measure, and the
            # bounds close on the estimate (the probe noise remains).
            assert float(lz.index_lower) == pytest.approx(float(lz.index), abs=1e-12)
            assert float(lz.index_upper) == pytest.approx(float(lz.index), abs=1e-12)
            assert "SLQ; bounds [" in lz.summary()
        assert float(r.index_lower) == float(r.index_upper) == float(r.index)
        # ‖Hg‖/‖g‖ at a non-critical point, by its definition.
        x0 = jnp.ones(12)
        g = a @ x0 - b
        r0 = critical_point_report(f, x0)
        assert not r0.is_critical
        assert float(r0.gradient_curvature) == pytest.approx(float(jnp.linalg.norm(a @ g) / jnp.linalg.norm(g)))


def cubic(p):              # critical points (±1, ±1): minimum, maximum and two saddles
    return p[0] ** 3 - 3 * p[0] + p[1] ** 3 - 3 * p[1]


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_critical_point_summary_over_an_ensemble_in_one_compiled_call(method):
    """Five points at once under jit(vmap): every class, a non-critical point,
    and each member equal to its own report."""
    with jax.enable_x64(True):
        points = jnp.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]])
        seeds = jnp.arange(5)
        summarise = lambda p, k: critical_point_summary(cubic, p, key=k, method=method, num_steps=2)  # noqa: E731
        together = jax.jit(jax.vmap(summarise))(points, seeds)
        # H = diag(6x, 6y); the origin has H = 0 and ‖g‖ = 3√2.
        np.testing.assert_array_equal(together.class_names(),
                                      ["minimum", "maximum", "saddle", "saddle", "degenerate"])
        np.testing.assert_array_equal(together.is_critical, [True, True, True, True, False])
        np.testing.assert_allclose(together.lambda_min, [6, -6, -6, -6, 0], atol=1e-12)
        np.testing.assert_allclose(together.lambda_max, [6, -6, 6, 6, 0], atol=1e-12)
        np.testing.assert_allclose(together.gradient_norm, [0, 0, 0, 0, 3 * np.sqrt(2)], atol=1e-12)
        if method == "dense":
            np.testing.assert_allclose(together.index, [0, 1, 0.5, 0.5, 0])
        for i in range(5):
            alone = critical_point_report(cubic, points[i], key=i, method=method, num_steps=2)
            assert alone.classification == together.class_names()[i]
            assert alone.is_critical == bool(together.is_critical[i])
            for field in ("loss", "gradient_norm", "lambda_min", "lambda_max", "index",
                          "index_standard_error", "index_lower", "index_upper", "eigenvalue_tolerance"):
                np.testing.assert_allclose(getattr(together, field)[i], getattr(alone, field),
                                           rtol=1e-12, atol=1e-14, err_msg=field)


TOOLS = {  # the host-level tools that take the user's loss
    "critical_point_report": lambda f, p: critical_point_report(f, p).lambda_min,
    "block_eigenvalues dense": lambda f, p: block_eigenvalues(f, p, block="a")[0],
    "block_eigenvalues lanczos": lambda f, p: block_eigenvalues(f, p, block="a", method="lanczos")[0],
    "dense_spectrum": lambda f, p: dense_spectrum(f, p)[0],
    "escape_saddle": lambda f, p: escape_saddle(f, p).eigenvalue,
}


@pytest.mark.parametrize("tool", TOOLS)
def test_host_level_tools_take_any_callable_and_keep_nothing_of_it(tool):
    """An unhashable callable works (escape_saddle raised before), and once the
    caller drops the loss, nothing it captured is kept alive by a compilation
    cache (a jit keyed on the loss would hold it for the life of the process)."""
    import gc
    import weakref

    class Captured:                 # what a loss closes over (a dataset, say)
        scale = 5.0

    def quadratic(p, scale):        # H = diag(2·scale, −2, 2, 2)
        return scale * p["a"][0] ** 2 - p["a"][1] ** 2 + jnp.sum(p["b"] ** 2)

    class Unhashable:
        __hash__ = None

        def __init__(self, captured):
            self.captured = captured

        def __call__(self, p):
            return quadratic(p, self.captured.scale)

    def closure(captured):          # a plain (hashable) function
        return lambda p: quadratic(p, captured.scale)

    point = {"a": jnp.array([0.1, 0.2]), "b": jnp.full(2, 0.1)}
    with jax.enable_x64(True):
        for make_loss in (Unhashable, closure):
            captured = Captured()
            alive = weakref.ref(captured)
            assert float(TOOLS[tool](make_loss(captured), point)) == pytest.approx(-2.0)
            del captured
            gc.collect()
            assert alive() is None, make_loss.__name__


def test_critical_point_summary_compiles_once_under_the_callers_jit():
    """The documented way to analyse many points: jit the pure summary once."""
    traces = []

    def counted(p):
        traces.append(1)
        return saddle(p)

    with jax.enable_x64(True):
        summarise = jax.jit(lambda p, k: critical_point_summary(counted, p, key=k))
        summarise(jnp.array([0.1, 0.2]), 0)
        first = len(traces)
        for i, x in enumerate((0.3, -0.5, 2.0)):
            s = summarise(jnp.array([x, 0.0]), i + 1)
            assert s.class_names() == "saddle" and float(s.gradient_norm) == pytest.approx(10 * abs(x))
        assert first > 0 and len(traces) == first   # later points reuse the compiled program


def _tiny_net():
    """A 2→3→2 tanh network with zero weights and the log-prior output bias: a critical point."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(40, 2)))
    y = jnp.asarray((x[:, 0] * x[:, 1] > 0).astype(np.int32))
    prior = jnp.array([jnp.mean(y == 0), jnp.mean(y == 1)])
    params = {"hidden": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)},
              "out": {"kernel": jnp.zeros((3, 2)), "bias": jnp.log(prior)}}

    def loss(p, batch):
        h = jnp.tanh(batch["x"] @ p["hidden"]["kernel"] + p["hidden"]["bias"][None, :])
        logits = h @ p["out"]["kernel"] + p["out"]["bias"][None, :]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, batch["y"][:, None], 1)[:, 0])

    return loss, params, {"x": x, "y": y}


def test_escape_from_network_saddle_and_layer_blocks():
    with jax.enable_x64(True):
        loss, params, batch = _tiny_net()
        r = critical_point_report(loss, params, batch)
        assert r.is_critical and r.classification == "saddle"
        esc = escape_saddle(loss, params, batch)
        assert bool(esc.escaped) and float(esc.eigenvalue) < 0
        assert float(esc.loss_after) < float(esc.loss_before)
        assert float(esc.predicted_decrease) > 0
        # Blocks: names, sizes, and the block spectrum equals the dense Hessian's submatrix's.
        assert parameter_blocks(params) == {"hidden": 9, "out": 8}
        h = jax.jit(lambda p, b: dense_hessian(loss, p, b))(params, batch)
        hidden = np.linalg.eigvalsh(np.asarray(h[:9, :9]))     # ravel order: hidden.bias, hidden.kernel, …
        np.testing.assert_allclose(block_eigenvalues(loss, params, batch, block="hidden"), hidden, atol=1e-12)
        lz = block_eigenvalues(loss, params, batch, block="hidden", method="lanczos", k=2, num_steps=9)
        np.testing.assert_allclose(lz, np.concatenate([hidden[:2], hidden[-2:]]), atol=1e-10)
        with pytest.raises(ValueError, match="blocks are"):
            block_eigenvalues(loss, params, batch, block="layers.7")


def test_slices_along_eigenvectors(tmp_path):
    with jax.enable_x64(True):
        a, b, eig, x_star = _quadratic()
        f = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
        lam, vec = np.linalg.eigh(np.asarray(a))
        alphas = jnp.linspace(-1, 1, 21)
        top = loss_slice(f, jnp.asarray(x_star), jnp.asarray(vec[:, -1]), alphas=alphas)
        np.testing.assert_allclose(top - f(jnp.asarray(x_star)), 0.5 * lam[-1] * alphas ** 2, atol=1e-10)
        betas = jnp.linspace(-2, 2, 5)
        surf = loss_surface(f, jnp.asarray(x_star), jnp.asarray(vec[:, -1]), jnp.asarray(vec[:, 0]),
                            alphas=alphas, betas=betas)
        assert surf.shape == (21, 5)
        direct = f(jnp.asarray(x_star) + alphas[3] * vec[:, -1] + betas[1] * vec[:, 0])
        assert float(surf[3, 1]) == pytest.approx(float(direct), rel=1e-12)
    plot_loss_slice(alphas, [top], str(tmp_path / "slice.png"), labels=["top"])
    plot_loss_surface(alphas, betas, surf, str(tmp_path / "surface.png"))
    assert (tmp_path / "slice.png").exists() and (tmp_path / "surface.png").exists()


def test_a_block_is_its_own_leaves_not_a_nested_blocks():
    """A module with its own parameter and a submodule: block "block" is its own
    leaves; a prefix that is no block takes every block under it."""
    with jax.enable_x64(True):
        p = {"block": {"gamma": jnp.array([1.0, 2.0]), "dense": {"kernel": jnp.array([[1.0, 0.5], [0.2, 3.0]])}}}

        def loss(p):
            return jnp.sum(3 * p["block"]["gamma"] ** 2) + jnp.sum(p["block"]["dense"]["kernel"] ** 4)

        assert parameter_blocks(p) == {"block.dense": 4, "block": 2}
        np.testing.assert_allclose(block_eigenvalues(loss, p, block="block"), [6.0, 6.0])
        kernel = np.sort(12 * np.array([1.0, 0.5, 0.2, 3.0]) ** 2)
        np.testing.assert_allclose(block_eigenvalues(loss, p, block="block.dense"), kernel)
        hidden = {"layers": {"0": {"w": jnp.ones(2)}, "1": {"w": jnp.ones(3)}}, "head": {"w": jnp.ones(1)}}
        both = block_eigenvalues(lambda q: jnp.sum(q["layers"]["0"]["w"] ** 2) + jnp.sum(q["layers"]["1"]["w"] ** 2)
                                 + jnp.sum(q["head"]["w"] ** 2), hidden, block="layers")
        np.testing.assert_allclose(both, [2.0] * 5)


def test_block_eigenvalues_by_lanczos_says_when_they_have_not_converged():
    with jax.enable_x64(True):
        d = jnp.concatenate([jnp.zeros(40), jnp.linspace(0.01, 5.0, 60)])
        params = {"layer": {"w": jnp.zeros(100)}}

        def loss(p):
            return 0.5 * jnp.sum(d * p["layer"]["w"] ** 2)

        with pytest.warns(UserWarning, match=r"did not converge in 12 products.*raise num_steps"):
            block_eigenvalues(loss, params, block="layer", method="lanczos", k=2, num_steps=12)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = block_eigenvalues(loss, params, block="layer", method="lanczos", k=2, num_steps=100)
        # One Krylov space holds one copy of the 40-fold eigenvalue 0 (documented in lanczos).
        np.testing.assert_allclose(got, [0.0, 0.01, float(d[-2]), 5.0], atol=1e-8)
        with pytest.raises(ValueError, match=r"k=50 at each end needs num_steps >= 100.*got num_steps=80"):
            block_eigenvalues(loss, params, block="layer", method="lanczos", k=50)


def test_slices_keep_the_params_precision_and_want_1d_offsets():
    with jax.enable_x64(True):
        params = {"w": jnp.ones(3, jnp.float32)}
        d = {"w": jnp.array([1.0, 0.0, 0.0], jnp.float32)}
        seen = []

        def loss(p):
            seen.append(p["w"].dtype)
            return jnp.sum(p["w"] ** 2)

        out = loss_slice(loss, params, d, alphas=jnp.linspace(-1, 1, 5))  # float64 under x64
        assert out.dtype == jnp.float32 and set(seen) == {jnp.dtype(jnp.float32)}
        surf = loss_surface(loss, params, d, d, alphas=jnp.linspace(-1, 1, 3), betas=jnp.linspace(-1, 1, 2))
        assert surf.dtype == jnp.float32
        with pytest.raises(ValueError, match=r"alphas must be a 1-D array.*alphas=jnp.array\(\[0.5\]\)"):
            loss_slice(loss, params, d, alphas=0.5)
        with pytest.raises(ValueError, match="betas must be a 1-D array"):
            loss_surface(loss, params, d, d, alphas=jnp.zeros(2), betas=jnp.zeros((2, 2)))
        with pytest.raises(ValueError, match="step_sizes is empty"):
            escape_saddle(loss, params, step_sizes=[])


def test_a_non_finite_hessian_is_unresolved_not_degenerate():
    assert classify_curvature(np.nan, np.nan, np.nan) == "unresolved"
    assert classify_curvature(-np.inf, 1.0, 1e-3) == "unresolved"
    for method in ("dense", "lanczos"):
        r = critical_point_report(lambda p: jnp.sum(p ** 2) * jnp.nan, jnp.ones(3), method=method)
        assert r.classification == "unresolved" and np.isnan(float(r.index)), method


def test_near_a_degenerate_critical_point_the_absolute_tolerance_decides():
    """The finder stops near the inflection of (x − 1)³ with a small, definite
    curvature: by the relative default that is its quadratic model's label; an
    absolute tolerance calls it degenerate (the documented way)."""
    with jax.enable_x64(True):
        f = lambda p: (p - 1.0) ** 3  # noqa: E731
        found = find_critical_point(f, jnp.array(0.5))
        assert bool(found.converged) and abs(float(found.params) - 1) < 1e-3
        assert critical_point_report(f, found.params).classification == "maximum"
        assert critical_point_report(f, found.params, eigenvalue_atol=1e-2).classification == "degenerate"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_refused_with_the_fix(dtype):
    f = lambda p: jnp.sum(p ** 2)  # noqa: E731
    for call in (lambda: critical_point_report(f, jnp.ones(3, dtype)),
                 lambda: find_critical_point(f, jnp.ones(3, dtype), solver="dense")):
        with pytest.raises(TypeError, match="float32 or float64 only.*astype"):
            call()


def test_unconverged_lanczos_ends_prove_a_saddle_and_nothing_else():
    """Ritz values lie inside the spectrum: unconverged, λ_min may be lower and
    λ_max higher, so only a saddle can be read off them (review: a 300-parameter
    quadratic with λ_min = −0.05 was called a minimum after 20 steps)."""
    assert classify_curvature(0.5, 2.0, 0.01, converged=False) == "unresolved"
    assert classify_curvature(-0.5, 2.0, 0.01, converged=False) == "saddle"
    assert classify_curvature(-0.5, 0.001, 0.01, converged=False) == "unresolved"
    np.testing.assert_array_equal(
        classify_curvature(np.array([0.5, -0.5]), np.array([2.0, 2.0]), 0.01, converged=np.array([False, True])),
        ["unresolved", "saddle"])
    with jax.enable_x64(True):
        d = jnp.concatenate([jnp.array([-0.05]), jnp.linspace(0.1, 100.0, 299)])

        def loss(p):
            return 0.5 * jnp.sum(d * p**2)

        short = critical_point_report(loss, jnp.zeros(300), method="lanczos", num_steps=20)
        assert not short.converged and short.classification == "unresolved"
        assert float(short.lambda_min) > -0.05  # a Ritz value, inside the spectrum
        assert "not converged" in short.summary()
        full = critical_point_report(loss, jnp.zeros(300), method="lanczos", num_steps=300)
        assert full.converged and full.classification == "saddle"
        assert float(full.lambda_min) == pytest.approx(-0.05, rel=1e-8)
        dense = critical_point_report(loss, jnp.zeros(300), method="dense")
        assert dense.converged and dense.classification == "saddle"


def test_find_critical_point_does_not_call_a_far_start_or_an_infinite_one_converged():
    # The default tolerance follows the loss at the current point: a start far
    # away (a large loss there) once loosened it so much that the start passed.
    def rosenbrock(p):
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    far = find_critical_point(rosenbrock, jnp.array([10.0, 10.0]), max_steps=200)
    assert not bool(far.converged) or float(far.gradient_norm) < 1e-3
    if bool(far.converged):
        np.testing.assert_allclose(np.asarray(far.params), [1.0, 1.0], atol=1e-2)
    bad = find_critical_point(rosenbrock, jnp.array([jnp.inf, 1.0]), max_steps=5)
    assert not bool(bad.converged)


@pytest.mark.parametrize("key", range(4))
def test_escape_tries_both_signs_where_the_gradient_does_not_decide(key):
    """At the monkey saddle (g = 0, H = 0) the sign of d is arbitrary and one
    side of every line goes up: stepping along +d only escaped for 1 key in 4."""
    with jax.enable_x64(True):
        esc = escape_saddle(monkey, jnp.zeros(2), key=key)
        assert bool(esc.escaped) and float(esc.loss_after) < 0.0
        np.testing.assert_allclose(esc.params, float(esc.step_size) * esc.direction, atol=1e-15)
        assert float(esc.loss_after) == pytest.approx(float(monkey(esc.params)), rel=1e-12)
        # The best of ±α for α = 2^-j (a plain loop over both sides as the reference).
        best = min(float(monkey(s * 0.5 ** j * esc.direction)) for j in range(20) for s in (1, -1))
        assert float(esc.loss_after) == pytest.approx(best, rel=1e-14, abs=1e-300)
    # Where the gradient decides the sign, d points downhill and a symmetric tie keeps +α.
    with jax.enable_x64(True):
        esc = escape_saddle(saddle, jnp.array([0.0, 1e-3]))
        assert float(jnp.vdot(jax.grad(saddle)(jnp.array([0.0, 1e-3])), esc.direction)) < 0
        assert float(esc.step_size) > 0 and bool(esc.escaped)


def test_escape_says_whether_lanczos_converged():
    """A 300-parameter quadratic with λ_min = −0.05: after 10 steps Lanczos reads
    +0.16, no step lowers the loss, and that must not read as "no saddle"."""
    d = jnp.concatenate([jnp.array([-0.05]), jnp.linspace(0.1, 100.0, 299)])

    def loss(p):
        return 0.5 * jnp.sum(d * p ** 2)

    with jax.enable_x64(True):
        with pytest.warns(UserWarning, match=r"did not converge λ_min in 10 products.*raise num_steps"):
            short = escape_saddle(loss, jnp.zeros(300), num_steps=10)
        assert not bool(short.converged) and not bool(short.escaped)
        assert float(short.eigenvalue) > -0.05 and float(short.residual) > 1e-3
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            full = escape_saddle(loss, jnp.zeros(300), num_steps=300)
            # Under jit nothing can warn: the fields say it.
            traced = jax.jit(lambda p: escape_saddle(loss, p, num_steps=10))(jnp.zeros(300))
        # Lanczos' tolerance: √ε · max|θ| (the top Ritz value reaches 100 after these steps).
        assert bool(full.converged) and float(full.residual) <= np.sqrt(np.finfo(np.float64).eps) * 100
        assert float(full.eigenvalue) == pytest.approx(-0.05, rel=1e-7)
        assert not bool(traced.converged) and float(traced.residual) == pytest.approx(float(short.residual))


def test_escape_checks_step_sizes_before_tracing():
    calls = []

    def loss(p):
        calls.append(1)
        return saddle(p)

    for bad, message in [([[0.1, 0.2]], r"step_sizes must be 1-D, got shape \(1, 2\)"),
                         ([], "step_sizes is empty"),
                         ([0.1, -1.0], r"step_sizes must be positive and finite, got \[-1.0\]"),
                         ([float("nan")], "step_sizes must be positive and finite"),
                         ([True], "step_sizes must be real numbers")]:
        with pytest.raises(ValueError, match=message):
            escape_saddle(loss, jnp.zeros(2), step_sizes=bad)
    with pytest.raises(ValueError, match="params has no entries"):
        escape_saddle(loss, {"w": jnp.zeros(0)})
    assert not calls


def test_critical_point_settings_are_checked_before_tracing():
    calls = []

    def loss(p):
        calls.append(1)
        return saddle(p)

    for kwargs, message in [
        ({"gradient_tol": -1.0}, "gradient_tol must be a finite number >= 0, got -1.0; the ‖∇L‖"),
        ({"gradient_tol": float("nan")}, "gradient_tol must be a finite number >= 0, got nan"),
        ({"eigenvalue_rtol": -1.0}, "eigenvalue_rtol must be a finite number >= 0"),
        ({"eigenvalue_atol": -1.0}, "eigenvalue_atol must be a finite number >= 0"),
        ({"eigenvalue_atol": float("nan")}, "eigenvalue_atol must be a finite number >= 0, got nan"),
        ({"dense_max_params": -1}, "dense_max_params must be an integer >= 0"),
        ({"num_steps": 1, "method": "lanczos"}, r"needs num_steps >= 2, got num_steps=1"),
    ]:
        for tool in (critical_point_report, critical_point_summary):
            with pytest.raises(ValueError, match=message):
                tool(loss, jnp.zeros(2), **kwargs)
    for empty in ({}, jnp.zeros(0), {"w": jnp.zeros((0, 3))}):
        for tool in (critical_point_report, critical_point_summary, find_critical_point):
            with pytest.raises(ValueError, match="params has no entries"):
                tool(loss, empty)
    assert not calls
    with pytest.raises(ValueError, match=r"tolerance must be >= 0.*got \[-5.0\]"):
        classify_curvature(1.0, 2.0, -5.0)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        classify_curvature(np.array([1.0, -1.0]), np.array([2.0, 2.0]), np.array([0.1, -0.1]))
    # Traced tolerances pass the checks (a sweep under jit).
    with jax.enable_x64(True):
        s = jax.jit(lambda tol: critical_point_summary(saddle, jnp.zeros(2), gradient_tol=tol,
                                                       eigenvalue_atol=tol))(1e-8)
        assert s.class_names() == "saddle" and bool(s.is_critical)


def test_slices_refuse_integer_params_instead_of_rounding_the_steps():
    # Integer params took the direction and each α cast to integers: every
    # point of the slice was L(θ) (here 4, where L(1.5, 1) = 10.25).
    with pytest.raises(TypeError, match="params must hold real floating-point"):
        loss_slice(saddle, jnp.array([1, 1]), jnp.array([1.0, 0.0]), alphas=jnp.array([0.5]))
    with pytest.raises(TypeError, match="params must hold real floating-point"):
        loss_surface(saddle, jnp.array([1, 1]), jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]),
                     alphas=jnp.array([0.5]), betas=jnp.array([0.5]))
    np.testing.assert_allclose(loss_slice(saddle, jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0]),
                                          alphas=jnp.array([0.5])), [10.25])


def test_condition_number_of_half_precision_eigenvalues():
    from jdl.hessian.condition import condition_number
    # The default rtol n·ε of bfloat16 is 1.56 for 200 eigenvalues: it excluded all of them (κ = inf).
    c = condition_number(jnp.linspace(1.0, 10.0, 200).astype(jnp.bfloat16))
    assert c.definition == "definite" and float(c.value) == pytest.approx(10.0) and int(c.num_excluded) == 0
    # κ = 1e5 overflowed float16's range (65 504).
    assert float(condition_number(jnp.array([1e-3, 100.0], jnp.float16)).value) == pytest.approx(1e5, rel=1e-3)
    with pytest.raises(TypeError, match="eigenvalues must be real"):
        condition_number(jnp.array([1.0 + 1.0j, 2.0]))


def test_block_eigenvalues_checks_dense_max_params():
    # Was accepted as is: -1 or None silently chose Lanczos, True meant "dense up to 1".
    loss = lambda p: jnp.sum(p["a"] ** 2)  # noqa: E731
    for bad in (-1, True, None, 2.5):
        with pytest.raises(ValueError, match="dense_max_params must be an integer >= 0"):
            block_eigenvalues(loss, {"a": jnp.ones(2)}, block="a", dense_max_params=bad)
