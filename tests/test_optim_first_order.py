"""jdl's first-order optimizers, each checked two ways over the whole registry:

(a) three updates against the textbook formula, evaluated here in plain Python
    floats (and the first step of several against numbers worked by hand);
(b) 200 steps on the digits MLP in float64 against Optax's counterpart
    (``OPTAX_EQUIVALENTS``), to 1e-7 relative.

A new optimizer added to ``FIRST_ORDER`` fails ``test_every_optimizer_is_checked``
until it has a formula and an Optax equivalent here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdl.optim as jo
from jdl.data import digits
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import make_loss

LR = 0.1
GRADS = [[0.5, -2.0], [0.25, 1.0], [-1.0, 0.5]]  # g₁, g₂, g₃ for a two-parameter vector


# ----------------------------------------------------------------------------------
# (a) The formulas, per coordinate, in plain Python.
# ----------------------------------------------------------------------------------


def _sgd(gs):
    return [[-LR * g for g in gt] for gt in gs]


def _momentum(gs, alpha=0.9, nesterov=False):
    v, out = [0.0, 0.0], []
    for gt in gs:
        v = [-LR * g + alpha * vi for g, vi in zip(gt, v)]          # Δw(n) = −ηg + αΔw(n−1)
        out.append([-LR * g + alpha * vi for g, vi in zip(gt, v)] if nesterov else list(v))
    return out


def _adagrad(gs, eps=1e-7):
    r, out = [0.0, 0.0], []
    for gt in gs:
        r = [ri + g * g for g, ri in zip(gt, r)]                     # r ← r + g²
        out.append([-LR * g / (eps + math.sqrt(ri)) for g, ri in zip(gt, r)])
    return out


def _adadelta(gs, rho=0.95, eps=1e-6):
    eg, ex, out = [0.0, 0.0], [0.0, 0.0], []
    for gt in gs:
        eg = [rho * e + (1 - rho) * g * g for g, e in zip(gt, eg)]
        d = [math.sqrt(x + eps) / math.sqrt(e + eps) * g for g, e, x in zip(gt, eg, ex)]
        ex = [rho * x + (1 - rho) * di * di for di, x in zip(d, ex)]
        out.append([-LR * di for di in d])
    return out


def _rmsprop(gs, beta=0.9, eps=1e-7, momentum=None, centered=False):
    r, m, v, out = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], []
    for gt in gs:
        r = [beta * ri + (1 - beta) * g * g for g, ri in zip(gt, r)]  # r ← βr + (1−β)g²
        m = [beta * mi + (1 - beta) * g for g, mi in zip(gt, m)]
        var = [ri - mi * mi for ri, mi in zip(r, m)] if centered else r
        step = [-LR * g / (eps + math.sqrt(s)) for g, s in zip(gt, var)]
        if momentum is not None:
            v = [s + momentum * vi for s, vi in zip(step, v)]
            step = list(v)
        out.append(step)
    return out


def _adam(gs, b1=0.9, b2=0.999, eps=1e-8, nesterov=False):
    m, v, out = [0.0, 0.0], [0.0, 0.0], []
    for t, gt in enumerate(gs, start=1):
        m = [b1 * mi + (1 - b1) * g for g, mi in zip(gt, m)]
        v = [b2 * vi + (1 - b2) * g * g for g, vi in zip(gt, v)]
        if nesterov:
            m_hat = [b1 * mi / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t) for g, mi in zip(gt, m)]
        else:
            m_hat = [mi / (1 - b1**t) for mi in m]
        v_hat = [vi / (1 - b2**t) for vi in v]
        out.append([-LR * mh / (math.sqrt(vh) + eps) for mh, vh in zip(m_hat, v_hat)])
    return out


def _adamax(gs, b1=0.9, b2=0.999, eps=1e-8):
    m, u, out = [0.0, 0.0], [0.0, 0.0], []
    for t, gt in enumerate(gs, start=1):
        m = [b1 * mi + (1 - b1) * g for g, mi in zip(gt, m)]
        u = [max(b2 * ui, abs(g) + eps) for g, ui in zip(gt, u)]
        out.append([-LR / (1 - b1**t) * mi / ui for mi, ui in zip(m, u)])
    return out


FORMULAS = {
    "jdl:sgd": _sgd,
    "jdl:momentum": _momentum,
    "jdl:nesterov": lambda gs: _momentum(gs, nesterov=True),
    "jdl:adagrad": _adagrad,
    "jdl:adadelta": _adadelta,
    "jdl:rmsprop": _rmsprop,
    "jdl:rmsprop_momentum": lambda gs: _rmsprop(gs, momentum=0.9),
    "jdl:rmsprop_centered": lambda gs: _rmsprop(gs, centered=True),
    "jdl:adam": _adam,
    "jdl:adamax": _adamax,
    "jdl:nadam": lambda gs: _adam(gs, nesterov=True),
}

# First updates worked by hand, coordinate 0 (g₁ = 0.5) and 1 (g₁ = −2), η = 0.1.
HAND_FIRST_STEP = {
    "jdl:sgd": [-0.05, 0.2],                        # −ηg
    "jdl:momentum": [-0.05, 0.2],                   # Δw(0) = 0
    "jdl:nesterov": [-0.095, 0.38],                 # −ηg + α(−ηg) = −1.9ηg
    "jdl:adagrad": [-0.1 * 0.5 / (1e-7 + 0.5), 0.1 * 2 / (1e-7 + 2)],  # ≈ −η sign(g)
    "jdl:rmsprop": [-0.1 * 0.5 / (1e-7 + 0.5 * math.sqrt(0.1)),       # r = 0.1 g²
                    0.1 * 2 / (1e-7 + 2 * math.sqrt(0.1))],
    "jdl:adam": [-0.1 * 0.5 / (0.5 + 1e-8), 0.1 * 2 / (2 + 1e-8)],    # m̂ = g, v̂ = g²
    "jdl:adamax": [-0.1 * 0.5 / (0.5 + 1e-8), 0.1 * 2 / (2 + 1e-8)],  # m̂ = g, u = |g| + ε
}


def test_every_optimizer_is_checked():
    assert set(jo.FIRST_ORDER) == set(FORMULAS) == set(jo.OPTAX_EQUIVALENTS)
    assert all(name in jo.available_optimizers() for name in jo.FIRST_ORDER + jo.SECOND_ORDER)


@pytest.mark.parametrize("name", jo.FIRST_ORDER)
def test_three_steps_follow_the_formula(name):
    with jax.enable_x64(True):
        opt = jo.get_optimizer(name, LR)
        params = jnp.zeros(2, jnp.float64)
        state = opt.init(params)
        got = []
        for g in GRADS:
            updates, state = opt.update(jnp.asarray(g, jnp.float64), state, params)
            assert updates.dtype == jnp.float64
            got.append(np.asarray(updates))
        np.testing.assert_allclose(np.stack(got), np.asarray(FORMULAS[name](GRADS)), rtol=1e-12, atol=1e-15)
        if name in HAND_FIRST_STEP:
            np.testing.assert_allclose(got[0], HAND_FIRST_STEP[name], rtol=1e-12)


@pytest.mark.parametrize("name", jo.FIRST_ORDER)
def test_injected_learning_rate_is_readable_and_equivalent(name):
    """``inject_hyperparams`` works on every factory; a schedule's current value is readable."""
    factory = jo.OPTIMIZERS[name]
    with jax.enable_x64(True):  # float32 would round β₂ differently as an array and as a Python float
        grads = jnp.asarray(GRADS[0], jnp.float64)
        params = jnp.zeros(2, jnp.float64)
        plain = factory(LR)
        injected = optax.inject_hyperparams(factory)(learning_rate=jo.linear_decay(LR, LR / 10, 10))
        u_plain, _ = plain.update(grads, plain.init(params), params)
        state = injected.init(params)
        u_injected, state = injected.update(grads, state, params)
        np.testing.assert_allclose(u_injected, u_plain, rtol=1e-7)
        for _ in range(4):
            _, state = injected.update(grads, state, params)
    # The value used by the last (5th, count 4) step: 0.1 − 0.09·4/10.
    assert jo.injected_hyperparams(state)["learning_rate"] == pytest.approx(0.064, rel=1e-6)


def test_momentum_is_readable_and_follows_its_schedule():
    opt = optax.inject_hyperparams(jo.momentum)(learning_rate=0.1, momentum=jo.momentum_schedule([2, 4]))
    params = jnp.zeros(2)
    state = opt.init(params)
    seen = []
    for _ in range(6):
        _, state = opt.update(jnp.ones(2), state, params)
        seen.append(round(jo.injected_hyperparams(state)["momentum"], 6))
    assert seen == [0.5, 0.5, 0.9, 0.9, 0.99, 0.99]


def test_seed_and_optax_momentum_differ_only_under_a_schedule():
    """The docstring's claim: η inside the velocity (seed) vs outside (Optax)."""
    schedule = jo.step_decay(1.0, factor=10.0, every=1)
    params = jnp.zeros(1)
    seed, ref = jo.momentum(schedule, 0.9), optax.sgd(schedule, momentum=0.9)
    s1, s2 = seed.init(params), ref.init(params)
    for _ in range(2):
        u1, s1 = seed.update(jnp.ones(1), s1, params)
        u2, s2 = ref.update(jnp.ones(1), s2, params)
    # Step 2: seed −0.1 + 0.9·(−1) = −1.0; Optax −0.1·(1 + 0.9) = −0.19.
    np.testing.assert_allclose(u1, [-1.0], rtol=1e-6)
    np.testing.assert_allclose(u2, [-0.19], rtol=1e-6)


# ----------------------------------------------------------------------------------
# (b) 200 steps on the digits MLP, float64, against Optax.
# ----------------------------------------------------------------------------------

STEPS, BATCH = 200, 128


@pytest.fixture(scope="module")
def _digits_problem_x64():
    """Parameters, minibatches and one compiled gradient shared by every optimizer;
    each optimizer then compiles only its own small ``update``."""
    with jax.enable_x64(True):
        ds = digits()
        model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(16,))
        variables = model.init(jax.random.key_data(jax.random.key(0)), jnp.asarray(ds.train["x"][:2]))
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), variables.params)
        n = (len(ds.train["y"]) // BATCH) * BATCH
        xs = jnp.asarray(ds.train["x"][:n], jnp.float64).reshape(n // BATCH, BATCH, -1)
        ys = jnp.asarray(ds.train["y"][:n]).reshape(n // BATCH, BATCH)
        loss = make_loss(model, cross_entropy)
        # Plain lists of leaves keep the 2×200 dispatches per optimizer cheap.
        leaves, treedef = jax.tree.flatten(params)
        gradient = jax.jit(jax.grad(
            lambda w, x, y: loss(jax.tree.unflatten(treedef, w), variables.model_state, {"x": x, "y": y})[0]))
        batches = list(zip(xs, ys))

        def train(opt):
            @jax.jit
            def apply(g, s, p):
                updates, s = opt.update(g, s, p)
                return optax.apply_updates(p, updates), s

            p, s = leaves, opt.init(leaves)
            for i in range(STEPS):
                p, s = apply(gradient(p, *batches[i % len(batches)]), s, p)
            return p

        return leaves, train


@pytest.fixture
def digits_problem(_digits_problem_x64):
    """The module's float64 problem, with float64 on for this test only (enabling it
    around a module fixture's ``yield`` left it on for every later test of the module)."""
    with jax.enable_x64(True):
        yield _digits_problem_x64


@pytest.mark.parametrize("name", jo.FIRST_ORDER)
def test_200_steps_on_digits_equal_optax(name, digits_problem):
    params0, train = digits_problem
    pair = jo.OPTAX_EQUIVALENTS[name]
    lr = 1.0 if name == "jdl:adadelta" else 0.01
    with jax.enable_x64(True):
        ours, theirs = train(pair.jdl(lr)), train(pair.optax(lr))
        for a, b, p0 in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), jax.tree.leaves(params0)):
            assert a.dtype == jnp.float64
            assert float(jnp.linalg.norm(b - p0)) > 1e-3 * (1 + float(jnp.linalg.norm(p0)))  # it trained
            relative = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
            assert relative < 1e-7, f"{name}: relative difference {relative:.2e}"
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * float(jnp.max(jnp.abs(b))))


# ----------------------------------------------------------------------------------
# Registry and training core.
# ----------------------------------------------------------------------------------


def test_prefix_separates_jdl_from_optax():
    from jdl.optim.transforms import AdamState

    ours = jo.get_optimizer("jdl:adam", 1e-3).init(jnp.zeros(2))
    theirs = jo.get_optimizer("adam", 1e-3).init(jnp.zeros(2))
    assert isinstance(ours[0], AdamState)
    assert isinstance(theirs[0], optax.ScaleByAdamState)
    assert isinstance(jo.get_optimizer("jdl:rmsprop_momentum", 1e-3, momentum=0.5), optax.GradientTransformation)


def test_optax_optimizers_defined_as_partials_are_found():
    """optax.nadam and optax.nadamw are functools.partial objects of adam/adamw:
    the name lookup skipped them, so `--optimizer nadam` was 'unknown'."""
    assert {"nadam", "nadamw"} <= set(jo.available_optimizers())
    params = jnp.array([1.0, -2.0])
    grads = jnp.array([0.5, 0.25])
    ours = jo.get_optimizer("nadam", 1e-2)
    theirs = optax.nadam(1e-2)
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = theirs.update(grads, theirs.init(params), params)
    np.testing.assert_array_equal(u1, u2)


def test_unknown_name_points_to_the_prefixed_one():
    with pytest.raises(ValueError, match="registered as 'jdl:newton'"):
        jo.get_optimizer("newton", 1.0)
    with pytest.raises(ValueError, match="positive"):
        jo.get_optimizer("jdl:adam", -1.0)


def test_jdl_optimizer_drops_into_the_train_step():
    from jdl.data import two_moons
    from jdl.training import create_train_state, make_train_step

    ds = two_moons(128)
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(8,))
    opt = jo.get_optimizer("jdl:nadam", 0.05)
    state = create_train_state(model, opt, key=0, batch=batch)
    step = make_train_step(model, cross_entropy, opt)
    losses = []
    for _ in range(5):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]


def test_centred_rmsprop_stays_finite_under_a_steady_gradient():
    """r − m² → 0 for a constant gradient and rounds below 0: the root gave NaN
    (float32, decay 0.5, g = 12.9, from step ~25; decay 0.9 from ~133)."""
    for decay, g in ((0.5, 12.9), (0.5, 1.3), (0.9, -75.198), (0.9, -2.2264)):
        opt = jo.rmsprop(1e-3, decay=decay, centered=True)
        grads = jnp.full((1,), g, jnp.float32)
        state = opt.init(grads)
        step = jax.jit(opt.update)
        for _ in range(200):
            u, state = step(grads, state)
            assert bool(jnp.all(jnp.isfinite(u))), (decay, g)


@pytest.mark.parametrize("factory, kwargs, name", [
    ("adam", dict(b1=1.0), "b1"), ("adam", dict(b2=1.0), "b2"), ("adamax", dict(b1=1.0), "b1"),
    ("nadam", dict(b2=-0.1), "b2"), ("adagrad", dict(eps=0.0), "eps"), ("rmsprop", dict(eps=0.0), "eps"),
    ("rmsprop", dict(decay=1.5), "decay"), ("rmsprop", dict(momentum=1.0), "momentum"),
    ("momentum", dict(momentum=1.5), "momentum"), ("nesterov", dict(momentum=-0.1), "momentum"),
    ("adadelta", dict(rho=-0.5), "rho"), ("adam", dict(learning_rate=-1e-3), "learning_rate"),
    ("sgd", dict(learning_rate=float("nan")), "learning_rate"), ("adam", dict(eps=float("inf")), "eps"),
])
def test_hyperparameters_are_checked_when_the_optimizer_is_built(factory, kwargs, name):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=name):
        getattr(jo, factory)(**kwargs)


def test_checked_hyperparameters_still_inject_and_vmap():
    # ε = 0 is fine with ε_root > 0 (or an initial accumulator), and traced values pass.
    jo.adam(1e-3, eps=0.0, eps_root=1e-8)
    jo.adagrad(0.1, eps=0.0, initial_accumulator_value=0.1)
    jo.sgd(optax.linear_schedule(0.1, 0.0, 10))  # a schedule reaching 0 is a schedule
    opt = optax.inject_hyperparams(jo.adam)(learning_rate=1e-3, b1=0.9)
    w = jnp.ones(3)

    def run(lr):
        state = opt.init(w)
        state.hyperparams["learning_rate"] = lr
        return opt.update(w, state)[0]

    out = jax.jit(jax.vmap(run))(jnp.array([1e-3, 1e-2]))
    assert out.shape == (2, 3) and bool(jnp.all(jnp.isfinite(out)))


# --- from a review of the formulas, dtypes and settings -------------------------------------


def test_injected_hyperparameters_in_bfloat16_are_accepted():
    # Optax casts hyperparameters to the params' dtype; bfloat16's NumPy kind is 'V',
    # which the check refused ("learning_rate must be a positive finite number").
    params = jnp.zeros(3, jnp.bfloat16)
    for opt in (optax.inject_hyperparams(jo.rmsprop)(learning_rate=1e-3),
                optax.inject_hyperparams(jo.momentum)(learning_rate=1e-3),
                optax.inject_hyperparams(jo.adam, static_args=("b2",))(learning_rate=1e-3)):
        updates, _ = opt.update(jnp.ones(3, jnp.bfloat16), opt.init(params), params)
        assert updates.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(updates)))
    # b2 = 0.999 cast to bfloat16 is 1: Adam's bias correction 1 − b2ᵗ would be 0 (NaN updates)
    with pytest.raises(ValueError, match=r"b2 is 1 in bfloat16.*static_args=\('b2',\)"):
        optax.inject_hyperparams(jo.adam)(learning_rate=1e-3).init(params)


@pytest.mark.parametrize("build, message", [
    (lambda: jo.sgd(None), "learning_rate is required"),          # stepped up the loss
    (lambda: jo.adam(None), "learning_rate is required"),
    (lambda: jo.momentum(0.1, None), "momentum is required"),     # failed at the first update
    (lambda: jo.rmsprop(0.1, nesterov=True), "nesterov=True needs a momentum"),  # silently plain RMSProp
    (lambda: jo.transforms.scale_by_adam(b1=2.0), r"b1 must be in \[0, 1\)"),
    (lambda: jo.transforms.add_momentum(1.5), r"momentum must be in \[0, 1\)"),
    (lambda: jo.transforms.scale_by_rms(eps=0.0), "eps must be positive"),   # 0/0 = NaN
    (lambda: jo.transforms.scale_by_adadelta(rho=1.0), r"rho must be in \[0, 1\)"),
])
def test_first_order_settings_are_checked_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_adam_family_in_float16_gives_no_nan_where_the_gradient_is_zero():
    # ε = 1e-8 rounds to 0 in float16: a coordinate with zero gradient gave 0/0 = NaN.
    params = jnp.zeros(2, jnp.float16)
    for opt in (jo.adam(), jo.nadam(), jo.adamax()):
        updates, state = opt.update(jnp.array([0.0, 1.0], jnp.float16), opt.init(params), params)
        assert updates.dtype == jnp.float16 and float(updates[0]) == 0.0 and bool(jnp.isfinite(updates[1]))
        assert all(leaf.dtype in (jnp.float16, jnp.int32) for leaf in jax.tree.leaves(state))
