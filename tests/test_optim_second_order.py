"""Newton's method, damped (Levenberg–Marquardt) Newton and saddle-free Newton,
dense and matrix-free, against closed forms and against each other."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdl.optim as jo
from jdl.data import digits, two_moons
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import create_train_state, make_loss, make_train_step


def _stepper(opt, f):
    """The jitted update ``(params, state) -> (params, state)`` of ``opt`` on ``f``."""

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(f)(params), state, params, value_fn=f)
        return optax.apply_updates(params, updates), state

    return step


def _step(opt, f, params):
    """One update from a fresh state."""
    return _stepper(opt, f)(params, opt.init(params))


def _random_quadratic(n, *, eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return jnp.asarray(q @ np.diag(eigenvalues) @ q.T), jnp.asarray(rng.standard_normal(n))


EXACT_ON_A_CONVEX_QUADRATIC = {
    "newton": lambda n: jo.newton(),
    "damped_newton, λ = 0": lambda n: jo.damped_newton(damping=0.0, adaptive=False),
    "damped_newton_cg, λ = 0": lambda n: jo.damped_newton_cg(damping=0.0, adaptive=False, tol=1e-13,
                                                             max_iters=2 * n),
    "saddle_free_newton, λ = 0": lambda n: jo.saddle_free_newton(damping=0.0, adaptive=False),
    "saddle_free_newton_lanczos, k = n": lambda n: jo.saddle_free_newton_lanczos(damping=0.0, adaptive=False,
                                                                                 num_steps=n),
}


@pytest.mark.parametrize("method", EXACT_ON_A_CONVEX_QUADRATIC)
def test_one_step_solves_a_convex_quadratic(method):
    with jax.enable_x64(True):
        n = 9
        a, b = _random_quadratic(n, eigenvalues=np.geomspace(0.1, 100.0, n))

        def f(p):  # parameters as a pytree: the solvers must ravel and unravel it
            x = jnp.concatenate([p["w"], p["b"]])
            return 0.5 * x @ a @ x - b @ x

        params = {"w": jnp.ones(6), "b": -jnp.ones(3)}
        new, _ = _step(EXACT_ON_A_CONVEX_QUADRATIC[method](n), f, params)
        solution = np.linalg.solve(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.concatenate([new["w"], new["b"]]), solution, rtol=1e-9, atol=1e-10)


def _saddle(p):
    return p[0] ** 2 - p[1] ** 2


def test_newton_converges_to_the_saddle():
    with jax.enable_x64(True):
        params, opt = jnp.array([1.0, 0.5]), jo.newton()
        state, step = opt.init(params), _stepper(opt, _saddle)
        for _ in range(5):
            params, state = step(params, state)
        np.testing.assert_allclose(params, [0.0, 0.0], atol=1e-12)  # the saddle, f = 0
        assert float(jnp.linalg.norm(jax.grad(_saddle)(params))) < 1e-12


FIXED = dict(damping=1e-3, adaptive=False, reject_increase=False)


@pytest.mark.parametrize("opt", [jo.saddle_free_newton(**FIXED), jo.saddle_free_newton_lanczos(num_steps=2, **FIXED)],
                         ids=["dense", "lanczos"])
def test_saddle_free_newton_escapes_the_saddle(opt):
    with jax.enable_x64(True):
        params = jnp.array([1.0, 0.5])
        state, step = opt.init(params), _stepper(opt, _saddle)
        values = []
        for _ in range(8):
            params, state = step(params, state)
            values.append(float(_saddle(params)))
        # |H| = diag(2, 2): x goes to 0 as in Newton, y doubles (1 + 2/(2 + λ)) per step.
        assert abs(float(params[0])) < 1e-3
        np.testing.assert_allclose(float(params[1]), 0.5 * (1 + 2 / 2.001) ** 8, rtol=1e-9)
        assert all(b < a for a, b in zip(values, values[1:])) and values[-1] < -1e4
        assert float(state.min_curvature) == pytest.approx(-2.0)


@pytest.mark.parametrize("dense", [True, False], ids=["cholesky", "cg"])
def test_damping_makes_an_indefinite_system_positive_definite(dense):
    with jax.enable_x64(True):
        a, b = _random_quadratic(6, eigenvalues=[-3.0, -1.0, 0.5, 1.0, 2.0, 5.0], seed=1)

        def f(x):
            return 0.5 * x @ a @ x - b @ x

        opt = (jo.damped_newton if dense else jo.damped_newton_cg)(damping=0.1, adaptive=False,
                                                                  reject_increase=False)
        x = jnp.ones(6)
        g = jax.grad(f)(x)
        new, state = _step(opt, f, x)
        updates = new - x
        assert float(state.shift) > 3.0  # past −λ_min(H)
        assert float(g @ updates) < 0  # a descent direction
        assert float(f(x + updates)) < float(f(x))
        shifted = np.linalg.solve(np.asarray(a) + float(state.shift) * np.eye(6), np.asarray(g))
        np.testing.assert_allclose(updates, -shifted, rtol=1e-6, atol=1e-9)


def test_levenberg_marquardt_adapts_the_damping():
    with jax.enable_x64(True):
        a, b = _random_quadratic(4, eigenvalues=[1.0, 2.0, 3.0, 4.0])
        opt = jo.damped_newton(damping=0.5)
        _, state = _step(opt, lambda x: 0.5 * x @ a @ x - b @ x, jnp.ones(4))
        # On a quadratic with λ > 0 the model is exact in H: ρ = 1, λ ← 2/3 λ.
        assert float(state.reduction_ratio) == pytest.approx(1.0)
        assert float(state.damping) == pytest.approx(0.5 * 2 / 3)

        def pseudo_huber(x):  # nearly flat far out: the Newton step overshoots wildly
            return jnp.sum(jnp.sqrt(1 + x**2))

        x = jnp.array([3.0])
        new, state = _step(jo.damped_newton(damping=1e-3), pseudo_huber, x)
        assert float(state.reduction_ratio) < 0
        np.testing.assert_array_equal(new, x)  # the step was rejected
        assert float(state.damping) == pytest.approx(1e-3 * 1.5)


@pytest.fixture(scope="module")
def _tiny_network_x64():
    """A 2-4-2 MLP on two moons (22 parameters), in float64."""
    with jax.enable_x64(True):
        ds = two_moons(64)
        model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(4,))
        variables = model.init(jax.random.key_data(jax.random.key(3)), jnp.asarray(ds.train["x"][:2]))
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64) + 0.3, variables.params)
        batch = {"x": jnp.asarray(ds.train["x"], jnp.float64), "y": jnp.asarray(ds.train["y"])}
        loss = make_loss(model, cross_entropy)
        return params, (lambda p: loss(p, variables.model_state, batch)[0])


@pytest.fixture
def tiny_network(_tiny_network_x64):
    """The module's float64 problem, with float64 on for this test only (enabling it
    around a module fixture's ``yield`` left it on for every later test of the module)."""
    with jax.enable_x64(True):
        yield _tiny_network_x64


def _flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def test_conjugate_gradient_matches_the_dense_solve(tiny_network):
    params, f = tiny_network
    with jax.enable_x64(True):
        settings = dict(damping=2.0, adaptive=False, reject_increase=False)
        dense, _ = _step(jo.damped_newton(**settings), f, params)
        matrix_free, state = _step(jo.damped_newton_cg(tol=1e-12, max_iters=100, **settings), f, params)
        assert float(state.shift) == 2.0  # H + 2I was positive definite: no restart
        np.testing.assert_allclose(_flat(matrix_free), _flat(dense), rtol=1e-8, atol=1e-10)


def test_lanczos_with_full_dimension_matches_dense_saddle_free(tiny_network):
    params, f = tiny_network
    with jax.enable_x64(True):
        x, unravel = jax.flatten_util.ravel_pytree(params)
        hessian = jax.jit(jax.hessian(lambda v: f(unravel(v))))(x)  # eager would be slow
        eigenvalues = np.linalg.eigvalsh(np.asarray(hessian))
        assert eigenvalues.min() < -1e-6 < 1e-6 < eigenvalues.max()  # a genuinely indefinite H
        settings = dict(damping=0.1, adaptive=False, reject_increase=False)
        dense, dense_state = _step(jo.saddle_free_newton(**settings), f, params)
        krylov, krylov_state = _step(jo.saddle_free_newton_lanczos(num_steps=x.size, **settings), f, params)
        np.testing.assert_allclose(_flat(krylov), _flat(dense), rtol=1e-7, atol=1e-9)
        assert float(dense_state.min_curvature) == pytest.approx(eigenvalues.min(), rel=1e-8)
        assert float(krylov_state.min_curvature) == pytest.approx(eigenvalues.min(), rel=1e-6)


def test_damped_newton_beats_adam_on_a_small_network():
    """Full-batch digits (the first 256 training images), a 64-8-10 MLP (610
    parameters), 10 steps each; Adam at the best of four learning rates. The
    Newton steps run in jdl's own train step, which hands them ``value_fn``."""
    ds = digits()
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(8,))
    batch = {k: jnp.asarray(v[:256]) for k, v in ds.train.items()}
    loss = make_loss(model, cross_entropy)
    start = create_train_state(model, optax.adam(1e-3), key=0, batch=batch)

    def f(p):
        return loss(p, start.model_state, batch)[0]

    def adam_final_loss(lr, steps=10):
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)

        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(f)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (start.params, opt.init(start.params)), None, length=steps)
        return f(p)

    best_adam = float(jnp.min(jax.jit(jax.vmap(adam_final_loss))(jnp.array([1e-3, 1e-2, 3e-2, 1e-1]))))
    for name in ("jdl:damped_newton", "jdl:damped_newton_cg"):
        opt = jo.get_optimizer(name, 1.0)
        state = start.replace(opt_state=opt.init(start.params))
        step = make_train_step(model, cross_entropy, opt)
        for _ in range(10):
            state, _ = step(state, batch)
        newton = float(f(state.params))
        assert newton < best_adam < float(f(start.params))
        assert newton < 0.6 * best_adam, (name, newton, best_adam)


@pytest.mark.parametrize("name", ["jdl:newton", "jdl:saddle_free_newton", "jdl:saddle_free_newton_lanczos"])
def test_second_order_runs_in_the_train_step(name):
    """The training core passes ``value_fn`` to optimizers with extra args (the
    damped Newton methods are run there by the test above)."""
    ds = two_moons(64)
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(4,))
    opt = jo.get_optimizer(name, 1.0)
    state = create_train_state(model, opt, key=0, batch=batch)
    step = make_train_step(model, cross_entropy, opt)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    if name != "jdl:newton":  # plain Newton may head for a saddle or a maximum
        assert losses[-1] < losses[0]


def test_missing_value_fn_is_a_clear_error():
    opt = jo.damped_newton()
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(x, opt.init(x), x)
    with pytest.raises(TypeError, match="scalar learning_rate"):
        jo.newton(optax.linear_schedule(1.0, 0.1, 10))


def test_dense_methods_refuse_a_hessian_that_would_not_fit():
    big = jnp.zeros(300_000)  # a 360 GB Hessian
    f = lambda w: jnp.sum(w ** 2)  # noqa: E731
    for name in ("newton", "damped_newton", "saddle_free_newton"):
        opt = getattr(jo, name)()
        with pytest.raises(MemoryError) as caught:
            jax.eval_shape(lambda w: opt.update(w, opt.init(w), w, value_fn=f)[0], big)
        message = str(caught.value)
        # one sentence (it read "the dense Hessian newton needs (…) of N parameters needs"), and the
        # way out is an optimizer, not the Hessian-analysis tools
        assert message.startswith(f"the dense Hessian that {name} inverts each step of 300,000 parameters needs")
        assert "use a matrix-free optimizer" in message and "damped_newton_cg" in message
        assert "spectral_density" not in message


def test_damped_newton_gives_no_step_when_no_shift_makes_the_system_definite():
    """H = diag(1, −100), and three doublings of τ from 0.1 stay below 100:
    the update is zero (a failed Cholesky gave NaN), λ grows, shift is kept."""
    a = jnp.array([1.0, -100.0])
    f = lambda w: 0.5 * jnp.sum(a * w ** 2)  # noqa: E731
    w = jnp.array([1.0, 1.0])
    for reject in (True, False):
        opt = jo.damped_newton(damping=0.1, max_shift_attempts=3, reject_increase=reject)
        state = opt.init(w)
        u, new = opt.update(a * w, state, w, value_fn=f)
        np.testing.assert_array_equal(u, 0.0)
        assert float(new.shift) == pytest.approx(0.1) and float(new.damping) > 0.8
        assert np.isnan(float(new.reduction_ratio))
        # With enough attempts it finds τ > 100 and steps downhill.
        opt = jo.damped_newton(damping=0.1, reject_increase=reject)
        u, new = opt.update(a * w, opt.init(w), w, value_fn=f)
        assert float(f(w + u)) < float(f(w)) and float(new.shift) > 100


DAMPED = {
    "damped_newton": jo.damped_newton,
    "damped_newton_cg": jo.damped_newton_cg,
    "saddle_free_newton": jo.saddle_free_newton,
    "saddle_free_newton_lanczos": jo.saddle_free_newton_lanczos,
}


@pytest.mark.parametrize("name", DAMPED)
@pytest.mark.parametrize("adaptive", [True, False])
def test_setting_an_injected_damping_resets_lambda(name, adaptive):
    """``damping`` only starts λ, which the state carries; setting the injected
    value after ``init`` must reset λ to it (it used to be ignored): the next
    steps equal those of an optimizer started with that λ from the same point."""
    with jax.enable_x64(True):
        a, b = _random_quadratic(4, eigenvalues=[-1.0, 2.0, 3.0, 40.0], seed=2)
        f = lambda x: 0.5 * x @ a @ x - b @ x + 0.1 * jnp.sum(x ** 4)  # noqa: E731
        factory = DAMPED[name]
        static = ("adaptive", "num_steps") if name.endswith("lanczos") else ("adaptive",)
        injected = optax.inject_hyperparams(factory, static_args=static)(damping=1.0, adaptive=adaptive)
        x = jnp.ones(4)
        state = injected.init(x)
        step = _stepper(injected, f)
        x, state = step(x, state)  # one step with λ = 1
        # Unchanged, it runs as the plain factory.
        plain = factory(damping=1.0, adaptive=adaptive)
        x_plain, state_plain = _step(plain, f, jnp.ones(4))
        np.testing.assert_allclose(x, x_plain, rtol=1e-12)
        state = jo.set_injected_hyperparam(state, "damping", 30.0)
        fresh = factory(damping=30.0, adaptive=adaptive)
        fresh_step, fresh_state = _stepper(fresh, f), fresh.init(x)
        for _ in range(3):
            x_new, state = step(x, state)
            x_fresh, fresh_state = fresh_step(x, fresh_state)
            np.testing.assert_allclose(x_new, x_fresh, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(state.inner_state.damping, fresh_state.damping, rtol=1e-12)
            x = x_new
        assert (float(state.inner_state.damping) == 30.0) != adaptive


def test_newton_on_a_singular_hessian_takes_the_minimum_norm_step():
    """An exactly singular ``H`` made the LU solve NaN, written into every
    parameter; now the step is ``−H⁺ g`` (numpy's pseudo-inverse)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        basis, _ = np.linalg.qr(rng.standard_normal((5, 5)))
        hessian = basis @ np.diag([0.0, 0.0, 1.0, 2.0, 5.0]) @ basis.T
        b = rng.standard_normal(5)
        for name, g_offset in (("consistent", np.zeros(5)), ("inconsistent", basis[:, 0])):
            f = lambda w, c=g_offset: 0.5 * w @ hessian @ w - b @ w + c @ w  # noqa: E731
            w = jnp.asarray(rng.standard_normal(5))
            g = jax.grad(f)(w)
            updates, _ = jo.newton().update(g, jo.newton().init(w), w, value_fn=f)
            np.testing.assert_allclose(updates, -np.linalg.pinv(hessian, rcond=1e-10) @ np.asarray(g),
                                       rtol=1e-9, atol=1e-12, err_msg=name)
        # float32, and a regular H still takes the LU step exactly.
        f = lambda w: jnp.sum(w[:1] ** 2) + 0.0 * w[1]  # noqa: E731
        w = jnp.ones(2, jnp.float32)
        updates, _ = jax.jit(lambda w: jo.newton().update(jax.grad(f)(w), None, w, value_fn=f))(w)
        np.testing.assert_allclose(updates, [-1.0, 0.0], atol=1e-6)
        a, b = _random_quadratic(4, eigenvalues=[1.0, 2.0, 3.0, 4.0])
        q = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
        x = jnp.ones(4)
        updates, _ = jo.newton().update(jax.grad(q)(x), None, x, value_fn=q)
        np.testing.assert_allclose(x + updates, np.linalg.solve(a, b), rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e-5, 1e-7])
def test_lanczos_saddle_free_newton_does_not_depend_on_the_loss_scale(scale):
    """The breakdown test had a floor of 1 on the operator's scale: in float32 a
    Hessian with eigenvalues near 1e-7 lost all but one Krylov direction, and
    the negative curvature at the saddle read +4.9 (× scale) instead of −3."""
    eigenvalues = np.linspace(-3.0, 7.0, 12) * scale
    h, b = _random_quadratic(12, eigenvalues=eigenvalues, seed=1)
    h, b = h.astype(jnp.float32), (b * scale).astype(jnp.float32)

    def f(x):
        return 0.5 * x @ h @ x - b @ x

    x0 = jnp.ones(12, jnp.float32)
    settings = dict(damping=0.1 * scale, adaptive=False, reject_increase=False)
    krylov = jo.saddle_free_newton_lanczos(num_steps=12, **settings)
    dense = jo.saddle_free_newton(**settings)
    (x_k, state_k), (x_d, _) = _step(krylov, f, x0), _step(dense, f, x0)
    np.testing.assert_allclose(x_k - x0, x_d - x0, rtol=2e-4, atol=2e-5 * float(jnp.linalg.norm(x_d - x0)))
    np.testing.assert_allclose(float(state_k.min_curvature) / scale, -3.0, rtol=1e-4)


@pytest.mark.parametrize("name", ["damped_newton", "damped_newton_cg", "saddle_free_newton",
                                  "saddle_free_newton_lanczos"])
def test_a_step_the_model_did_not_promise_still_raises_the_damping(name):
    """With η = 3 the quadratic model predicts an increase; the step that then
    raised the loss was rejected but λ stayed put, so the same rejected step
    repeated forever (loss 2.5 after 50 steps, ρ reported as 1)."""
    h, b = _random_quadratic(4, eigenvalues=[1.0, 2.0, 3.0, 4.0])

    def f(x):
        return 0.5 * x @ h @ x - b @ x

    opt = getattr(jo, name)(learning_rate=3.0, damping=1e-3)
    step, x = _stepper(opt, f), jnp.zeros(4)
    state = opt.init(x)
    start = float(f(x + 1.0))
    x = x + 1.0
    for _ in range(50):
        x, state = step(x, state)
    assert float(f(x)) < start - 1.0
    assert float(state.damping) > 1e-2


def test_krylov_settings_are_checked_and_a_zero_gradient_reports_no_curvature():
    for make, match in ((lambda: jo.saddle_free_newton_lanczos(num_steps=0), "num_steps must be a positive integer"),
                        (lambda: jo.damped_newton_cg(max_iters=0), "max_iters must be a positive integer"),
                        (lambda: jo.damped_newton_cg(max_restarts=-1), "max_restarts must be an integer >= 0")):
        with pytest.raises(ValueError, match=match):
            make()
    _, state = _step(jo.saddle_free_newton_lanczos(num_steps=2), _saddle, jnp.zeros(2))
    assert np.isnan(float(state.min_curvature))  # g = 0: no Krylov space, nothing measured (was inf)


# --- from a review of the formulas and settings -------------------------------------


def test_newton_on_a_hessian_singular_up_to_rounding_takes_the_pseudo_inverse_step():
    # LU "solved" H = A Aᵀ of rank 6 (size 8) with a small residual and a step
    # 10¹⁵ times the minimum-norm one; the loss rose to 6e14.
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        a = rng.standard_normal((8, 6))
        h, b = jnp.asarray(a @ a.T), jnp.asarray(rng.standard_normal(8))
        f = lambda x: 0.5 * x @ h @ x - b @ x  # noqa: E731
        x0 = jnp.zeros(8)
        u, _ = jo.newton().update(jax.grad(f)(x0), optax.EmptyState(), x0, value_fn=f)
        expected = -np.linalg.pinv(np.asarray(h)) @ np.asarray(jax.grad(f)(x0))
        np.testing.assert_allclose(u, expected, rtol=1e-8, atol=1e-10)


def test_saddle_free_newton_without_damping_leaves_flat_directions_alone():
    # λ = 0 with a zero eigenvalue gave 0/0 = NaN in every parameter.
    h = jnp.diag(jnp.array([2.0, -1.0, 0.0]))
    f = lambda x: 0.5 * x @ h @ x + jnp.array([1.0, 1.0, 0.0]) @ x  # noqa: E731
    x0 = jnp.zeros(3)
    for opt in (jo.saddle_free_newton(damping=0.0, adaptive=False, reject_increase=False),
                jo.saddle_free_newton_lanczos(damping=0.0, adaptive=False, reject_increase=False, num_steps=3)):
        u, _ = opt.update(jax.grad(f)(x0), opt.init(x0), x0, value_fn=f)
        np.testing.assert_allclose(u, [-0.5, -1.0, 0.0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("build, message", [
    (lambda: jo.newton(-1.0), "learning_rate must be a positive finite number"),   # uphill steps
    (lambda: jo.newton(float("nan")), "learning_rate must be a positive finite number"),
    (lambda: jo.damped_newton_cg(damping=-1.0), "damping must be a finite number >= 0"),
    (lambda: jo.saddle_free_newton(damping=-1.0), "damping must be a finite number >= 0"),
    (lambda: jo.saddle_free_newton_lanczos(damping=-2.0), "damping must be a finite number >= 0"),
    (lambda: jo.damped_newton_cg(tol=float("nan")), "tol must be a finite number >= 0"),  # zero CG iterations
    (lambda: jo.damped_newton_cg(tol=-1.0), "tol must be a finite number >= 0"),
    (lambda: jo.damped_newton(max_shift_attempts=-3), "max_shift_attempts"),
    (lambda: jo.damped_newton(max_shift_attempts=2.5), "max_shift_attempts"),
    (lambda: jo.damped_newton(min_damping=-1.0), "min_damping must be a finite number >= 0"),
    (lambda: jo.saddle_free_newton(min_damping=1.0, max_damping=0.5), "min_damping=1.0 exceeds max_damping=0.5"),
])
def test_second_order_settings_are_checked_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_lanczos_learning_rate_schedule_hint_names_static_args():
    with pytest.raises(TypeError, match=r"static_args=\('num_steps',\)"):
        jo.saddle_free_newton_lanczos(learning_rate=lambda count: 0.5)


@pytest.mark.parametrize("scale", [1.0, 1e-19, 1e-21])
def test_matrix_free_steps_do_not_depend_on_the_gradient_s_scale_in_float32(scale):
    # pᵀp and pᵀAp underflowed: at 1e-19 CG read zero curvature and raised τ
    # (step 44 % off), at 1e-21 the step was zero.
    d = jnp.array([1.0, 2.0, 3.0])
    xs = jnp.full(3, scale)
    f = lambda x: 0.5 * jnp.sum(d * (x - xs) ** 2)  # noqa: E731
    x0 = jnp.zeros(3)
    for opt in (jo.damped_newton_cg(damping=0.0, adaptive=False, reject_increase=False),
                jo.saddle_free_newton_lanczos(damping=0.0, adaptive=False, reject_increase=False, num_steps=3)):
        u, state = opt.update(jax.grad(f)(x0), opt.init(x0), x0, value_fn=f)
        np.testing.assert_allclose(u / scale, np.ones(3), rtol=1e-5)


def test_cg_with_tol_zero_stops_at_rounding_instead_of_raising_the_shift():
    # Iterating on a rounding-level residual read as zero curvature: the shift
    # went from 1 to 4 and the step from −0.8 to −0.5.
    f = lambda x: 2.0 * jnp.sum(x**2)  # noqa: E731
    x = jnp.ones(1)
    opt = jo.damped_newton_cg(damping=1.0, tol=0.0, adaptive=False, reject_increase=False)
    u, state = opt.update(jax.grad(f)(x), opt.init(x), x, value_fn=f)
    np.testing.assert_allclose(u, [-0.8], rtol=1e-6)
    assert float(state.shift) == 1.0


def test_a_numpy_float64_learning_rate_keeps_float32_parameters_float32():
    # Under x64 the Newton-CG step became float64, and its Hessian-vector product failed.
    f = lambda x: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 3.0], jnp.float32) * x**2)  # noqa: E731
    x = jnp.ones(3, jnp.float32)
    with jax.enable_x64(True):
        for opt in (jo.damped_newton_cg(np.float64(0.5)), jo.newton(np.float64(0.5)),
                    jo.saddle_free_newton(np.float64(0.5))):
            u, _ = opt.update(jax.grad(f)(x), opt.init(x), x, value_fn=f)
            assert u.dtype == jnp.float32


def test_damping_does_not_climb_once_converged():
    # Near the minimum ρ is rounding noise: λ rose to max_damping (1e8) in 60 steps.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    h = jnp.asarray(q @ np.diag([0.5, 1, 2, 3, 4]) @ q.T, jnp.float32)
    xs = jnp.asarray(rng.standard_normal(5), jnp.float32)
    f = lambda x: 1000.0 + 0.5 * (x - xs) @ h @ (x - xs)  # noqa: E731
    opt = jo.damped_newton(damping=1.0)
    step = _stepper(opt, f)
    x, state = jnp.zeros(5, jnp.float32), opt.init(jnp.zeros(5, jnp.float32))
    for _ in range(60):
        x, state = step(x, state)
    assert float(jnp.linalg.norm(x - xs)) < 1e-5
    assert float(state.damping) <= 1.0
