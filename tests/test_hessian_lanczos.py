"""Lanczos and power iteration against ``jnp.linalg.eigh``: matrices with known
spectra, and the dense Hessian of an MLP on the digits data (float64, scoped)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.data.datasets import load_digits_arrays
from jdl.hessian import (
    dense_hessian,
    hessian_operator,
    lanczos,
    lanczos_tridiagonal,
    linearize_hessian,
    model_objective,
    power_iteration,
    random_like,
    spectral_density,
)
from jdl.models import get_model
from jdl.nn import cross_entropy


def _known_matrix(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(q @ np.diag(eigenvalues) @ q.T), jnp.asarray(rng.normal(size=n))


def _scale(v, d):
    """A diagonal operator, ``d`` passed as its parameter (so compiled solvers are reused)."""
    return d * v


@functools.cache
def _solver(num_steps, k=1, which="LA", block_size=1):
    """``lanczos(...)`` compiled once per configuration and operator (``matvec`` is
    static): the restart tests run dozens of small solves, which eagerly would
    compile each one afresh (70 s for one test on 2 cores)."""
    return jax.jit(lanczos(num_steps, k=k, which=which, block_size=block_size), static_argnums=0)


def _matvec(v, a):
    return a @ v


@pytest.fixture(scope="module")
def spectrum():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(-1, 1, 194), [50.0, 40.0, 30.0, -20.0, -25.0, -8.0]])


def test_lanczos_matches_eigh_on_known_spectrum(spectrum):
    whiches = ("LA", "SA", "LM", "BE")
    with jax.enable_x64(True):
        a, v0 = _known_matrix(spectrum)
        results = jax.jit(lambda v, a: [lanczos(100, k=4, which=w)(_matvec, v, a) for w in whiches])(v0, a)
        exact = np.sort(spectrum)
        wanted = {"LA": exact[::-1][:4], "SA": exact[:4],
                  "LM": exact[np.argsort(-np.abs(exact))][:4],
                  "BE": np.concatenate([exact[:2], exact[-2:]])}
        for which, res in zip(whiches, results):
            want = wanted[which]
            # The three outliers at the wanted end converge to rounding; the fourth
            # sits at the edge of a dense bulk and converges to the tolerance.
            got = res.eigenvalues if which == "BE" else res.eigenvalues[:3]
            np.testing.assert_allclose(got, want if which == "BE" else want[:3], rtol=1e-10, err_msg=which)
            assert int(res.num_matvecs) < 100 and bool(jnp.all(res.converged)), which
            y = res.eigenvectors                                   # (k, n)
            true_res = jnp.linalg.norm(a @ y.T - y.T * res.eigenvalues[None, :], axis=0)
            np.testing.assert_allclose(res.residuals, true_res, rtol=1e-3, atol=1e-12, err_msg=which)
            np.testing.assert_allclose(y @ y.T, np.eye(4), atol=1e-10, err_msg=which)


@pytest.mark.parametrize("block_size", [1, 2])
def test_largest_magnitude_waits_for_the_other_end(block_size):
    """An isolated 9.99 at the top converges in a few steps; −10, inside a
    cluster in [−10, −9], takes many. ``which="LM"`` stopped on the chosen
    value alone and returned 9.99 as converged; both extremes must settle."""
    rng = np.random.default_rng(1)
    n = 120
    spectrum = np.concatenate([[9.99], rng.uniform(-10, -9, 60), [-10.0], rng.uniform(-1, 1, n - 62)])
    with jax.enable_x64(True):
        a, _ = _known_matrix(spectrum, seed=1)
        for seed in range(3):
            shape = (block_size, n) if block_size > 1 else (n,)
            v0 = jax.random.normal(jax.random.key(seed), shape, jnp.float64)
            short, full = jax.jit(lambda v, a: [lanczos(steps, k=1, which="LM", block_size=block_size)(_matvec, v, a)
                                                for steps in (30, n)])(v0, a)
            assert float(short.eigenvalues[0]) < -9.9 or not bool(short.converged[0])
            assert float(full.eigenvalues[0]) == pytest.approx(-10.0, rel=1e-10) and bool(full.converged[0])


def test_a_traced_tolerance_is_swept_under_vmap():
    """``if tol == 0`` on a traced tol raised TracerBoolConversionError."""
    a = jnp.diag(jnp.arange(1.0, 41.0))
    sweep = jax.jit(jax.vmap(lambda tol: lanczos(40, tol=tol)(lambda v: a @ v, jnp.ones(40)).num_matvecs))
    counts = [int(c) for c in sweep(jnp.array([1e-1, 1e-3, 0.0]))]
    assert counts[0] < counts[1] < counts[2] == 40


def test_lanczos_on_pytrees_and_invariant_subspaces():
    with jax.enable_x64(True):
        d = {"a": jnp.array([3.0, 1.0, 1.0]), "b": jnp.array([[2.0, 2.0], [5.0, 1.0]])}
        op = lambda v: jax.tree.map(jnp.multiply, d, v)  # noqa: E731 - diagonal, 3 distinct values
        v0 = jax.tree.map(jnp.ones_like, d)
        res, full = jax.jit(lambda v: (lanczos(7, k=3, which="LA")(op, v),
                                       lanczos(7, k=7, which="SA", tol=0)(op, v)))(v0)
        np.testing.assert_allclose(res.eigenvalues, [5.0, 3.0, 2.0], rtol=1e-12)
        top = jax.tree.map(lambda x: x[0], res.eigenvectors)
        np.testing.assert_allclose(jnp.abs(top["b"]), [[0, 0], [1, 0]], atol=1e-12)
        # v0 = ones touches only 4 distinct eigenvalues: the Krylov space breaks
        # down, restarts orthogonally, and still finds the whole spectrum.
        np.testing.assert_allclose(full.eigenvalues, [1, 1, 1, 2, 2, 3, 5], atol=1e-12)


def test_stopping_waits_for_what_an_invariant_krylov_space_missed():
    """A Krylov space that becomes invariant has exact Ritz pairs (residual 0),
    so a residual test alone would stop there — with one copy of a repeated
    eigenvalue, or without an eigenvector the start vector missed."""
    with jax.enable_x64(True):
        a, v0 = _known_matrix([5.0] * 3 + [1.0] * 30 + [0.5] * 27, seed=5)  # 3 distinct values
        cases = (("LA", 3, [5, 5, 5]), ("LA", 4, [5, 5, 5, 1]), ("SA", 2, [0.5, 0.5]),
                 ("LM", 3, [5, 5, 5]), ("BE", 4, [0.5, 0.5, 5, 5]))
        for which, k, want in cases:
            res = _solver(60, k, which)(_matvec, v0, a)
            np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10, err_msg=which)
            # It still stops early: each restarted space is 3-dimensional.
            assert bool(jnp.all(res.converged)) and int(res.num_matvecs) <= 12, (which, int(res.num_matvecs))
        # v0 orthogonal to the top eigenvector, and a zero v0 (a random start).
        d = jnp.array([1.0, 2.0, 3.0, 10.0])
        for start in (jnp.array([1.0, 1.0, 1.0, 0.0]), jnp.zeros(4)):
            res = _solver(4)(_scale, start, d)
            np.testing.assert_allclose(res.eigenvalues, [10.0], rtol=1e-12)
        # v0 an eigenvector inside the spectrum: after the restart the new space
        # runs as an ordinary Lanczos run from a random start would.
        line = jnp.arange(1.0, 51.0)
        for which, want in (("LA", [50, 49]), ("SA", [1, 2]), ("BE", [1, 49, 50])):
            res = _solver(60, len(want), which)(_scale, jnp.zeros(50).at[24].set(1.0), line)
            ordinary = _solver(60, len(want), which)(_scale, jnp.asarray(np.random.default_rng(1).normal(size=50)),
                                                     line)
            np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10, err_msg=which)
            assert int(res.num_matvecs) <= int(ordinary.num_matvecs) + 6 < 50, which
        # Out of steps before the restarted space could show that nothing beats
        # the eigenvalue v0 found: exact residual, but not reported converged.
        short = _solver(3)(_scale, jnp.zeros(50).at[39].set(1.0), line)
        assert float(short.residuals[0]) == 0.0 and not bool(short.converged[0])
        power = power_iteration(k=2, tol=1e-12, max_steps=1000)(lambda x: d * x, jnp.zeros(4))
        np.testing.assert_allclose(power.eigenvalues, [10.0, 3.0], rtol=1e-8)
        # Under vmap, a member that restarts beside one that does not.
        b, _ = _known_matrix(np.linspace(0.0, 5.0, 60), seed=5)
        both = jax.jit(jax.vmap(lambda m, v: lanczos(60, k=3, which="LA")(_matvec, v, m)))(
            jnp.stack([a, b]), jnp.stack([v0, v0]))
        for i, m in enumerate((a, b)):
            alone = _solver(60, 3, "LA")(_matvec, v0, m)
            np.testing.assert_allclose(both.eigenvalues[i], alone.eigenvalues, rtol=1e-10)
            assert int(both.num_matvecs[i]) == int(alone.num_matvecs)
        # Block Lanczos: a triple eigenvalue with blocks of 2.
        v2 = jnp.asarray(np.random.default_rng(5).normal(size=(2, 60)))
        res = _solver(40, 3, "LA", 2)(_matvec, v2, a)
        np.testing.assert_allclose(res.eigenvalues, [5, 5, 5], rtol=1e-10)


def test_restarted_spaces_that_finish_do_not_vouch_for_missed_copies():
    """A space begun at a restart that itself becomes invariant shows one copy of
    each of its eigenvalues: a rank-4 quadratic in 10 dimensions (six zeros) asked
    for its bottom 3, and a diagonal with triple and double eigenvalues, from ten
    random starts each. Before, four of the ten starts of the quadratic returned
    [0, 1.38, 1.92] marked converged (the rounding left in ``A q_j`` through
    autodiff, 50 ε·scale, sat above the breakdown threshold), and the diagonal
    returned [5, 3, 1, 0] for its top 4."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (4, 10), jnp.float64)

        def loss(p):
            return 0.5 * jnp.mean((x @ p["w"] - 1.0) ** 2)

        p = {"w": jnp.zeros(10)}
        operator = hessian_operator(loss)
        for seed in range(10):
            r = _solver(10, 3, "SA")(operator, random_like(seed, p), p)
            np.testing.assert_allclose(r.eigenvalues, 0.0, atol=1e-12, err_msg=str(seed))
            assert bool(jnp.all(r.converged))
        d = jnp.array([5.0, 5, 5, 3, 1, 0, 0, -2, -6, -6])
        for which, k, want in (("LA", 4, [5, 5, 5, 3]), ("SA", 3, [-6, -6, -2]), ("BE", 4, [-6, -6, 5, 5])):
            for seed in range(10):
                v0 = jax.random.normal(jax.random.key(seed), (10,), jnp.float64)
                r = _solver(10, k, which)(_scale, v0, d)
                np.testing.assert_allclose(r.eigenvalues, want, atol=1e-12, err_msg=f"{which} {seed}")
                assert bool(jnp.all(r.converged)), (which, seed)


def test_lanczos_rejects_bad_configuration():
    with pytest.raises(ValueError, match="which"):
        lanczos(10, which="largest")
    with pytest.raises(ValueError, match="at least k"):
        lanczos(3, k=5)
    with pytest.raises(ValueError, match="dimension 3"):
        lanczos(10, k=4)(lambda v: v, jnp.ones(3))


@pytest.fixture(scope="module")
def _digits_mlp_x64():
    """An MLP 64→32→10 (2 410 parameters) on 256 digits, float64, with its dense Hessian."""
    with jax.enable_x64(True):
        images, labels = load_digits_arrays()
        batch = {"x": jnp.asarray(images.reshape(-1, 64)[:256] / 16.0, jnp.float64),
                 "y": jnp.asarray(labels[:256], jnp.int32)}
        model = get_model("mlp", (64,), 10, hidden=(32,))
        v = model.init(jax.random.key_data(jax.random.key(0)), batch["x"][:2])
        params = jax.tree.map(lambda a: a.astype(jnp.float64), v.params)
        loss = model_objective(model, cross_entropy, v.model_state, train=False).loss
        h = jax.jit(lambda p, b: dense_hessian(loss, p, b))(params, batch)
        eig = np.linalg.eigvalsh(np.asarray(h))
        return {"loss": loss, "params": params, "batch": batch, "eig": eig, "model": model}


@pytest.fixture
def digits_mlp(_digits_mlp_x64):
    """The module's float64 problem, with float64 on for this test only (enabling it
    around a module fixture's ``yield`` left it on for every later test of the module)."""
    with jax.enable_x64(True):
        yield _digits_mlp_x64


def test_top5_and_bottom5_of_mlp_hessian_within_100_hvps(digits_mlp):
    loss, params, batch, eig = (digits_mlp[k] for k in ("loss", "params", "batch", "eig"))
    assert eig.size == 2410
    with jax.enable_x64(True):
        eigsh = lanczos(100, k=10, which="BE", tol=1e-7)

        @jax.jit
        def ends(params, batch, v0):
            _, hessian = linearize_hessian(loss, params, batch)   # linearised once, reused
            return eigsh(lambda v, h: h(v), v0, hessian)

        v0 = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype) * 1.3).reshape(a.shape), params)
        res = ends(params, batch, v0)
    assert int(res.num_matvecs) <= 100
    bottom, top = np.asarray(res.eigenvalues[:5]), np.asarray(res.eigenvalues[5:])
    np.testing.assert_allclose(top, eig[-5:], rtol=1e-6)
    np.testing.assert_allclose(bottom, eig[:5], rtol=1e-6)


def test_float32_accuracy_as_documented(digits_mlp):
    loss, params, batch, eig = (digits_mlp[k] for k in ("loss", "params", "batch", "eig"))
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    b32 = {"x": batch["x"].astype(jnp.float32), "y": batch["y"]}
    v0 = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype) * 1.3).reshape(a.shape), p32)
    res = jax.jit(lambda p, b, v: lanczos(100, k=10, which="BE")(hessian_operator(loss), v, p, b))(p32, b32, v0)
    assert res.eigenvalues.dtype == jnp.float32
    scale = np.abs(eig).max()
    # Documented: errors within 6e-7 · max|λ| (float32 rounding in the products);
    # asserted with a margin of 3 for other CPUs' rounding.
    got = np.asarray(res.eigenvalues, np.float64)
    np.testing.assert_allclose(got[-1], eig[-1], rtol=2e-6)
    np.testing.assert_allclose(got, np.concatenate([eig[:5], eig[-5:]]), atol=2e-6 * scale, rtol=0)


def test_power_iteration_reference(spectrum, digits_mlp):
    with jax.enable_x64(True):
        a, v0 = _known_matrix(spectrum)
        res = jax.jit(lambda v, a: power_iteration(k=2, max_steps=500, tol=1e-10)(_matvec, v, a))(v0, a)
        np.testing.assert_allclose(res.eigenvalues, [50.0, 40.0], rtol=1e-8)
        assert bool(jnp.all(res.converged))
        # PyHessian's rule (relative change < 1e-3) stops early with a larger error.
        loose = power_iteration(tol=1e-3, max_steps=500)(_matvec, v0, a)
        assert int(loose.num_matvecs) < int(res.num_matvecs)
        assert abs(float(loose.eigenvalues[0]) - 50.0) > 1e-8
    with pytest.raises(ValueError, match="k must be"):
        power_iteration(k=0)


def test_vmap_over_an_ensemble_of_seeds(digits_mlp):
    """Top eigenvalue of three independently initialised MLPs in one compiled call."""
    batch = {"x": digits_mlp["batch"]["x"][:64].astype(jnp.float32), "y": digits_mlp["batch"]["y"][:64]}
    model = get_model("mlp", (64,), 10, hidden=(8,))
    keys = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(jnp.arange(3))
    stacked = jax.jit(jax.vmap(lambda k: model.init(k, batch["x"][:2]).params))(keys)
    loss = model_objective(model, cross_entropy, {}, train=False).loss
    eigsh = lanczos(20, k=1, which="LA", tol=0)
    traces = []

    def top(params, v0):
        traces.append(1)
        return eigsh(hessian_operator(loss), v0, params, batch).eigenvalues[0]

    v0s = jax.tree.map(lambda a: jnp.ones_like(a), stacked)
    together = jax.jit(jax.vmap(top))(stacked, v0s)
    assert len(traces) == 1
    one = jax.jit(top)
    separately = [float(one(jax.tree.map(lambda a: a[i], stacked), jax.tree.map(lambda a: a[i], v0s)))
                  for i in range(3)]
    np.testing.assert_allclose(together, separately, rtol=2e-4)
    assert len(set(np.round(separately, 3))) == 3   # really different models


def test_curvature_tools_over_an_ensemble_in_one_compiled_call(digits_mlp):
    """SLQ index, Hutch++ trace, both Lanczos ends, condition number and
    classification of three seeds' MLPs in one jit(vmap(...)), equal to the
    members' own runs."""
    from jdl.hessian import classify_curvature, condition_number, hutch_plus_plus, spectral_density

    batch = {"x": digits_mlp["batch"]["x"][:64].astype(jnp.float32), "y": digits_mlp["batch"]["y"][:64]}
    model = get_model("mlp", (64,), 10, hidden=(8,))
    keys = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(jnp.arange(3))
    stacked = jax.jit(jax.vmap(lambda k: model.init(k, batch["x"][:2]).params))(keys)
    loss = model_objective(model, cross_entropy, {}, train=False).loss
    op = hessian_operator(loss)

    def curvature(params):
        ends = lanczos(40, k=2, which="BE")(op, jax.tree.map(jnp.ones_like, params), params, batch)
        density = spectral_density(op, params, params, batch, key=1, num_steps=20, num_probes=4)
        trace = hutch_plus_plus(30)(op, params, params, batch, key=2)
        return (ends.eigenvalues, density.quadrature.fraction_below(0.0), trace.estimate,
                condition_number(ends.eigenvalues, definition="magnitude").value)

    together = jax.jit(jax.vmap(curvature))(stacked)
    one = jax.jit(curvature)
    for i in range(3):
        alone = one(jax.tree.map(lambda a: a[i], stacked))
        for got, want in zip(together, alone):
            np.testing.assert_allclose(got[i], want, rtol=2e-4, atol=1e-6)
    names = classify_curvature(together[0][:, 0], together[0][:, 1], 1e-4 * np.abs(together[0]).max())
    assert names.shape == (3,) and set(names) <= {"minimum", "maximum", "saddle", "degenerate"}


def test_vmap_when_members_stop_at_different_steps():
    """Under vmap the Gram–Schmidt and stopping-test sizes follow the member
    that has gone furthest (``_at_least``): each member's result must equal its
    own run alone — eigenvalues, residuals and product counts."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        n = 120
        spectra = [np.linspace(0, 1, n), np.r_[np.linspace(0, 1, n - 1), 3.0], np.geomspace(1e-3, 1, n)]
        mats = []
        for s in spectra:
            q, _ = np.linalg.qr(rng.standard_normal((n, n)))
            mats.append((q * s) @ q.T)
        a = jnp.asarray(np.stack(mats))
        v0 = jnp.asarray(rng.standard_normal((3, n)))
        eigsh = lanczos(80, k=2, which="BE", tol=1e-8)
        run = jax.jit(lambda a, v: eigsh(lambda x: a @ x, v))
        together = jax.jit(jax.vmap(lambda a, v: eigsh(lambda x: a @ x, v)))(a, v0)
        alone = [run(a[i], v0[i]) for i in range(3)]
        assert len({int(r.num_matvecs) for r in alone}) > 1   # the members stop at different steps
        for i, r in enumerate(alone):
            assert int(together.num_matvecs[i]) == int(r.num_matvecs)
            np.testing.assert_allclose(together.eigenvalues[i], r.eigenvalues, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(together.residuals[i], r.residuals, rtol=1e-6, atol=1e-12)


def test_warm_start_needs_fewer_products(digits_mlp):
    loss, params, batch = (digits_mlp[k] for k in ("loss", "params", "batch"))
    with jax.enable_x64(True):
        eigsh = jax.jit(lambda v, p, b: lanczos(60, k=1, which="LA", tol=1e-6)(hessian_operator(loss), v, p, b))
        cold = eigsh(jax.tree.map(jnp.ones_like, params), params, batch)
        nearby = jax.tree.map(lambda a: a * 1.001, params)
        warm = eigsh(jax.tree.map(lambda a: a[0], cold.eigenvectors), nearby, batch)
        ref = eigsh(jax.tree.map(jnp.ones_like, params), nearby, batch)
    assert int(warm.num_matvecs) < int(cold.num_matvecs)
    np.testing.assert_allclose(warm.eigenvalues, ref.eigenvalues, rtol=1e-8)


def test_lanczos_on_a_batch_sharded_over_devices(digits_mlp):
    """The same compiled eigensolver runs on data split over devices (conftest gives 4 CPUs)."""
    from jdl.training import data_parallel_mesh, replicate, shard_batch

    mesh = data_parallel_mesh()
    if mesh.size < 2:
        pytest.skip("needs several devices")
    batch = {"x": digits_mlp["batch"]["x"][:128].astype(jnp.float32), "y": digits_mlp["batch"]["y"][:128]}
    model = get_model("mlp", (64,), 10, hidden=(8,))
    params = jax.jit(lambda k: model.init(k, batch["x"][:2]).params)(jax.random.key_data(jax.random.key(4)))
    loss = model_objective(model, cross_entropy, {}, train=False).loss
    eigsh = jax.jit(lambda v, p, b: lanczos(20, k=2, which="BE", tol=0)(hessian_operator(loss), v, p, b))
    v0 = jax.tree.map(jnp.ones_like, params)
    local = eigsh(v0, params, batch)
    sharded = eigsh(replicate(v0, mesh), replicate(params, mesh), shard_batch(batch, mesh))
    assert len(jax.tree.leaves(shard_batch(batch, mesh))[0].sharding.device_set) == mesh.size
    np.testing.assert_allclose(sharded.eigenvalues, local.eigenvalues, rtol=1e-4)


# ----------------------------------------------------------------------------------
# Block Lanczos
# ----------------------------------------------------------------------------------


def test_block_lanczos_finds_a_repeated_eigenvalue_that_one_vector_cannot():
    rng = np.random.default_rng(3)
    spectrum = np.concatenate([[5.0, 5.0, 5.0, 4.9], rng.uniform(-1, 3, 192), [-2.0, -2.0, -2.5, -3.0]])
    with jax.enable_x64(True):
        a, v = _known_matrix(spectrum, seed=3)
        exact = np.sort(spectrum)
        # One starting vector sees a single copy of λ = 5 in exact arithmetic;
        # rounding lets a second copy emerge only slowly (5e-6 off after 40 steps).
        single = lanczos(40, k=4, which="LA", tol=1e-10)(_matvec, v, a)
        assert abs(float(single.eigenvalues[1]) - 5.0) > 1e-8
        v0 = jnp.asarray(rng.normal(size=(4, 200)))
        for which, want in (("LA", exact[::-1][:4]), ("SA", exact[:4]), ("BE", np.r_[exact[:2], exact[-2:]])):
            res = jax.jit(lambda v0, a, w=which: lanczos(120, k=4, which=w, tol=1e-10, block_size=4)(
                _matvec, v0, a))(v0, a)
            np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-9, err_msg=which)
            assert bool(jnp.all(res.converged)) and int(res.num_matvecs) % 4 == 0, which
            y = res.eigenvectors
            true_res = jnp.linalg.norm(a @ y.T - y.T * res.eigenvalues[None, :], axis=0)
            np.testing.assert_allclose(res.residuals, true_res, rtol=1e-2, atol=1e-12, err_msg=which)
            np.testing.assert_allclose(y @ y.T, np.eye(4), atol=1e-10, err_msg=which)


def test_block_lanczos_survives_a_rank_deficient_start_and_pytrees():
    d = jnp.array([1.0, 1, 1, 2, 2, 3, 3, 3, 4, 5, 6, 7])
    ones = jnp.ones_like(d)
    for v0 in (jnp.stack([ones, ones, ones]), jnp.stack([ones, 2 * ones, jnp.arange(12.0)])):
        # The block has rank 1 (or 2) and touches few distinct eigenvalues: the
        # deficient directions restart orthogonally and the triple 1 is found.
        # float32: the residual test admits |θ − λ| ≤ 1e-6·7, and rounding in
        # the block steps about n ε ‖A‖ = 1e-5 more (measured: at most 6.2e-6
        # over 200 random rank-1 and rank-2 starts on CPU; 1.1e-5 on an H100).
        res = lanczos(12, k=6, which="BE", tol=1e-6, block_size=3)(lambda x: d * x, v0)
        np.testing.assert_allclose(res.eigenvalues, [1, 1, 1, 5, 6, 7], atol=3e-5)
    tree = {"a": jnp.arange(1.0, 7.0), "b": jnp.arange(7.0, 13.0).reshape(2, 3)}
    v0 = jax.tree.map(lambda a: jnp.stack([jnp.ones_like(a), jnp.cos(jnp.arange(a.size)).reshape(a.shape)]), tree)
    res = lanczos(12, k=3, which="LA", block_size=2)(lambda x: jax.tree.map(jnp.multiply, tree, x), v0)
    np.testing.assert_allclose(res.eigenvalues, [12, 11, 10], rtol=1e-5)
    assert jax.tree.map(jnp.shape, res.eigenvectors) == {"a": (3, 6), "b": (3, 2, 3)}


@pytest.mark.parametrize("x64", [False, True])
def test_lanczos_basis_stays_orthonormal_on_hard_spectra(x64):
    """One full Gram–Schmidt pass after the three-term recurrence, a second one
    only by the DGKS criterion: the basis stays orthonormal to rounding and
    ``Q A Qᵀ = T`` on spectra that are spread, geometric over nine decades,
    of low rank (the Krylov space becomes invariant and restarts) or clustered.

    Where a space ended in a cut (``β_j = 0``) the coupling cut away may be up
    to the breakdown threshold ``max(10 √n ε, ε^{2/3})·max‖A q‖`` (documented):
    in float32 the cluster of width 1e-5 is below it, every step after the
    first ~55 restarts, and the restarted vectors keep couplings of about
    1e-5 (= 19 ε‖A‖; seed 2 here on CPU, seed 0 on an H100). Rows and columns
    of ``q_j`` that ended a space are held to that bound, the rest to
    rounding."""
    from jdl.hessian.lanczos import _breakdown_threshold

    rng = np.random.default_rng(0)
    n = 300
    spectra = {"spread": np.linspace(-1, 10, n), "geometric": np.geomspace(1e-6, 1e3, n),
               "low rank": np.r_[np.zeros(n - 20), np.linspace(1, 3, 20)],
               "cluster": np.r_[np.full(150, 1.0), 1 + 1e-7 * np.arange(100), np.linspace(2, 5, 50)]}
    with jax.enable_x64(x64):
        dtype, tol = (jnp.float64, 1e-14) if x64 else (jnp.float32, 1e-6)
        decompose = jax.jit(lambda a, v: lanczos_tridiagonal(120)(lambda x: a @ x, v))
        for name, eigenvalues in spectra.items():
            q, _ = np.linalg.qr(rng.standard_normal((n, n)))
            a = (q * eigenvalues) @ q.T
            d = decompose(jnp.asarray(a, dtype), jnp.asarray(rng.standard_normal(n), dtype))
            basis = np.asarray(d.basis, np.float64)
            np.testing.assert_allclose(basis @ basis.T, np.eye(120), atol=tol, err_msg=name)
            t = (np.diag(np.asarray(d.diagonal, np.float64)) + np.diag(np.asarray(d.off_diagonal, np.float64), 1)
                 + np.diag(np.asarray(d.off_diagonal, np.float64), -1))
            scale = np.abs(eigenvalues).max()
            bound = np.full(t.shape, tol * scale)
            cut = np.flatnonzero(np.asarray(d.off_diagonal) == 0)
            threshold = float(_breakdown_threshold(dtype, n, jnp.asarray(scale, dtype)))
            bound[cut, :] = bound[:, cut] = tol * scale + threshold
            assert np.all(np.abs(basis @ a @ basis.T - t) <= bound), name
            if name == "cluster" and not x64:
                assert cut.size > 0  # the case the bound is for


def test_lanczos_step_reorthogonalises_twice_when_the_first_pass_cancels():
    """A step whose product lies almost wholly in the span of older basis
    vectors (1e8 times its part outside): one Gram–Schmidt pass leaves that
    part polluted at ~1e-8; the DGKS criterion calls the second pass, and the
    new basis vector is orthogonal to ~1e-15."""
    from jdl.hessian.lanczos import _initial_state, _lanczos_step

    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        n, m = 200, 10
        q, _ = np.linalg.qr(rng.standard_normal((n, 6)))
        state, _ = _initial_state(jnp.asarray(q[:, 0]), m)
        # A history of three orthonormal basis vectors (any will do for one step).
        state = state._replace(basis=state.basis.at[1].set(q[:, 1]).at[2].set(q[:, 2]),
                               step=jnp.asarray(2, jnp.int32))
        product = 1e8 * q[:, 0] + q[:, 5]  # almost all along q_0, outside the recurrence's reach

        new = _lanczos_step(lambda x: jnp.asarray(product), state)
        fresh = np.asarray(new.basis[3])
        np.testing.assert_allclose(np.linalg.norm(fresh), 1, atol=1e-14)
        np.testing.assert_allclose(np.asarray(new.basis[:3]) @ fresh, 0, atol=1e-14)
        np.testing.assert_allclose(abs(fresh @ q[:, 5]), 1, atol=1e-14)


def test_stopping_test_eigensolve_on_a_leading_block_matches_the_full_one():
    """The per-step Ritz values and last eigenvector rows, computed on the
    smallest power-of-two leading block, equal those of the full padded ``eigh``."""
    from jdl.hessian.lanczos import _dense_ritz, _leading_ritz

    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        m = 45
        a = rng.standard_normal((m, m))
        t = jnp.asarray(a + a.T)
        for size in (1, 7, 8, 9, 16, 17, 33, 44, 45):
            for rows in (1, 3):
                if rows > size:
                    continue
                theta, last = _leading_ritz(t, jnp.asarray(size), rows)
                full_theta, vecs = _dense_ritz(t, jnp.asarray(size))
                np.testing.assert_allclose(theta[:size], full_theta[:size], atol=1e-12, err_msg=str(size))
                # Eigenvectors are defined up to sign: compare |entries| of the last rows.
                np.testing.assert_allclose(np.abs(last[:, :size]), np.abs(vecs[size - rows:size, :size]),
                                           atol=1e-10, err_msg=str(size))


@pytest.mark.parametrize("singular_values", [(1, 1e-2, 1e-5, 1e-6), (1, 1e-3, 0, 0)])
def test_block_orthonormalisation_keeps_the_basis_orthogonal(singular_values):
    """BCGS2's block step on an ill-conditioned (Gram route) and a rank-deficient
    (rank-revealing route) residual: orthonormal rows, orthogonal to the basis
    although the small directions amplify the first pass's rounding, and
    ``w = bᵀ u`` to rounding."""
    from jdl.hessian.lanczos import _breakdown_threshold, _orthonormal_block

    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        n = 300
        q, _ = np.linalg.qr(rng.standard_normal((n, 24)))
        basis = jnp.asarray(q[:, :20].T)
        # w spans 4 directions outside the basis with the given singular values,
        # plus the rounding-level basis components one Gram–Schmidt pass leaves.
        left, _ = np.linalg.qr(rng.standard_normal((4, 4)))
        w = left @ np.diag(singular_values) @ q[:, 20:].T + 1e-16 * rng.standard_normal((4, 20)) @ q[:, :20].T
        w = jnp.asarray(w)
        fresh = jnp.asarray(rng.standard_normal((4, n)))
        u, b, _ = _orthonormal_block(w, basis, fresh, _breakdown_threshold(w.dtype, n, jnp.asarray(1.0)))
        np.testing.assert_allclose(u @ u.T, np.eye(4), atol=1e-14)
        np.testing.assert_allclose(basis @ u.T, 0, atol=1e-14)
        np.testing.assert_allclose(b.T @ u, w, atol=1e-14)
        kept = np.asarray(singular_values) > 0
        np.testing.assert_allclose(np.linalg.svd(np.asarray(b), compute_uv=False), sorted(singular_values)[::-1],
                                   atol=1e-14)
        assert kept.sum() == 4 or np.linalg.matrix_rank(np.asarray(b), tol=1e-12) == kept.sum()


def test_block_lanczos_rejects_bad_configuration():
    with pytest.raises(ValueError, match="block_size"):
        lanczos(10, block_size=0)
    with pytest.raises(ValueError, match="exceeds num_steps"):
        lanczos(4, block_size=8)
    with pytest.raises(ValueError, match="leading axis of length 3"):
        lanczos(12, block_size=3)(lambda x: x, jnp.ones(12))


def test_block_lanczos_top5_bottom5_of_mlp_hessian_with_reverse_products(digits_mlp):
    loss, params, batch, eig = (digits_mlp[k] for k in ("loss", "params", "batch", "eig"))
    with jax.enable_x64(True):
        eigsh = lanczos(160, k=10, which="BE", tol=1e-7, block_size=4)

        @jax.jit
        def ends(params, batch, v0):
            _, hessian = linearize_hessian(loss, params, batch, mode="reverse")
            return eigsh(lambda v, h: h(v), v0, hessian)

        v0 = jax.tree.map(lambda a: jnp.stack([jnp.cos(jnp.arange(a.size, dtype=a.dtype) * (1.3 + i)).reshape(a.shape)
                                               for i in range(4)]), params)
        res = ends(params, batch, v0)
        # vmapped over two copies of the model in one compiled call (an ensemble)
        stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
        pair = jax.jit(jax.vmap(ends, in_axes=(0, None, None)))(stacked, batch, v0)
    assert int(res.num_matvecs) <= 160
    np.testing.assert_allclose(res.eigenvalues[5:], eig[-5:], rtol=1e-6)
    np.testing.assert_allclose(res.eigenvalues[:5], eig[:5], rtol=1e-6)
    np.testing.assert_allclose(pair.eigenvalues[1], res.eigenvalues, rtol=1e-10)


def _eigensolver_programs():
    """Programs with small symmetric eigensolves: Lanczos (single-vector and block),
    the saddle-free Newton updates and the dense critical-point finder."""
    import jdl.optim as jo
    from jdl.hessian import find_critical_point

    d = jnp.arange(1.0, 41.0)
    block = jnp.stack([jnp.ones(40), jnp.cos(jnp.arange(40.0)), jnp.arange(40.0), jnp.sin(jnp.arange(40.0))])
    x = jnp.linspace(0.1, 1.0, 12)
    f = lambda x: jnp.sum(d[:12] * jnp.sin(x) ** 2)  # noqa: E731

    def update(opt):
        return lambda x: opt.update(jax.grad(f)(x), opt.init(x), x, value_fn=f)[0]

    return {
        "lanczos": (lambda v: lanczos(24, k=2, which="BE")(lambda u: d * u, v), jnp.ones(40)),
        "block lanczos": (lambda v: lanczos(24, k=2, which="BE", block_size=4)(lambda u: d * u, v), block),
        "saddle-free newton": (update(jo.saddle_free_newton()), x),
        "saddle-free newton (lanczos)": (update(jo.saddle_free_newton_lanczos(num_steps=6)), x),
        "critical-point finder": (lambda x: find_critical_point(f, x, solver="dense").params, x),
    }


@pytest.mark.parametrize("program", list(_eigensolver_programs()))
@pytest.mark.parametrize("platform", ["cuda", "rocm"])
def test_gpu_programs_solve_small_eigenproblems_by_divide_and_conquer(platform, program):
    """On GPUs JAX's default eigensolver for matrices up to 32 × 32 is Jacobi
    (``syevj``), 0.36–0.55 ms a call on an H100 whatever the size; a Lanczos
    stopping test runs one per step. Every eigensolve of a program lowered for
    a GPU — stopping tests, Ritz pairs, block orthonormalisation, the
    optimizers' and the finder's — uses divide and conquer (``algorithm = 1``).
    Checked on the lowered program, so no GPU is needed."""
    if getattr(jax.lax.linalg, "EighImplementation", None) is None:
        pytest.skip("jax < 0.8.1 has no choice of eigensolver")
    fn, arg = _eigensolver_programs()[program]
    traced = jax.jit(fn).trace(arg)
    try:
        text = traced.lower(lowering_platforms=(platform,)).as_text()
    except (NotImplementedError, ValueError) as e:  # a jaxlib built without this platform's rules
        pytest.skip(f"cannot lower for {platform} here: {e}")
    solver = {"cuda": "cusolver", "rocm": "hipsolver"}[platform]
    calls = [line for line in text.splitlines() if f"@{solver}_syevd_ffi" in line]
    assert calls and all("algorithm = 1 " in line for line in calls), calls[:2]
    assert "lapack" not in text  # nothing of the CPU branch is left in a GPU program
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "lapack_ssyevd_ffi" in cpu and solver not in cpu


# --- from a review of restarts, scales and edge cases ---------------------------------------


def test_a_finished_restarted_space_may_not_hide_further_copies_of_a_wanted_value():
    # v0 an eigenvector of a triple top: the restarted space found 1.5 once more and
    # the run stopped with [1.5, 1.5, 0] (converged) for [1.5, 1.5, 1.5].
    with jax.enable_x64(True):
        d = jnp.array([1.5] * 3 + [0.0] * 5)
        r = lanczos(8, k=3, which="LA")(lambda v: d * v, jnp.zeros(8).at[0].set(1.0))
        np.testing.assert_allclose(r.eigenvalues, [1.5, 1.5, 1.5], atol=1e-12)
        assert bool(jnp.all(r.converged))
        d = jnp.array([2.0] + [-1.0] * 5 + [1.0] * 5)
        r = lanczos(11, k=2, which="SA")(lambda v: d * v, jnp.zeros(11).at[0].set(1.0))
        np.testing.assert_allclose(r.eigenvalues, [-1.0, -1.0], atol=1e-12)


def test_block_lanczos_after_a_restart_is_not_converged_until_the_space_is_spanned():
    d = jnp.array([5.0, 3.0, 3.0] + [0.0] * 9)
    v0 = jnp.zeros((2, 12)).at[0, 1].set(1.0).at[1, 2].set(1.0)  # sees only the 3s
    short = lanczos(4, k=2, which="LA", block_size=2)(lambda v: d * v, v0)
    assert not bool(jnp.any(short.converged))  # [3, 3] with zero residuals was reported converged
    full = lanczos(12, k=2, which="LA", block_size=2)(lambda v: d * v, v0)
    np.testing.assert_allclose(full.eigenvalues, [5.0, 3.0], rtol=1e-6)


def test_eigensolvers_work_at_any_operator_scale_in_float32():
    # Squares of entries near 1e-20 underflow in float32: λmax read 3.72 for 10, converged.
    # One compiled program per solver (the scale is an argument), run at each scale.
    top = jax.jit(lambda d: lanczos(40, k=1, which="LA")(_scale, jnp.ones(40), d))
    bottom = jax.jit(lambda d: lanczos(40, k=1, which="SA")(_scale, jnp.ones(40), d))
    block = jax.jit(lambda d: lanczos(40, k=1, which="LA", block_size=2)(
        _scale, jnp.stack([jnp.ones(40), jnp.arange(40.0)]), d))
    density = jax.jit(lambda d: spectral_density(_scale, jnp.ones(40), d, key=0, num_steps=20, num_probes=2))
    for scale in (1e-20, 1e20):
        d = (jnp.linspace(-3.0, 10.0, 40) * scale).astype(jnp.float32)
        for solve, expected in ((top, 10.0), (bottom, -3.0), (block, 10.0)):
            r = solve(d)
            assert float(r.eigenvalues[0]) / scale == pytest.approx(expected, rel=1e-5) and bool(r.converged[0])
        nodes = np.asarray(density(d).quadrature.nodes) / scale
        assert nodes.min() == pytest.approx(-3.0, rel=1e-3) and nodes.max() == pytest.approx(10.0, rel=1e-3)


def test_operator_products_must_keep_the_input_structure():
    # A product of the right size in another structure was flattened in a wrong order silently.
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(4)}
    with pytest.raises(ValueError, match="must return a pytree shaped like its input"):
        lanczos(4)(lambda v: {"x": v}, params)
    with pytest.raises(ValueError, match=r"leaf of shape \(3, 2\) for an input leaf of shape \(2, 3\)"):
        lanczos(4)(lambda v: {"a": v["a"].T, "b": v["b"]}, params)
    with pytest.raises(ValueError, match="v0 holds no numbers"):
        lanczos_tridiagonal(4)(lambda v: v, {})
