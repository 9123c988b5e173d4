"""Schedules, the plateau callback, clipping, weight decay and per-layer penalties,
each against its formula in plain Python."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdl.optim as jo
from jdl.training import FitContext, TrainState


def _values(schedule, steps):
    return np.array([float(schedule(k)) for k in steps])


# ----------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------


def test_linear_decay_reaches_its_floor_and_stays():
    steps = range(0, 150, 7)
    expected = [0.1 + (0.001 - 0.1) * min(k / 100, 1.0) for k in steps]
    np.testing.assert_allclose(_values(jo.linear_decay(0.1, 0.001, 100), steps), expected, rtol=1e-5)


def test_exponential_and_step_decay():
    steps = range(0, 50, 3)
    np.testing.assert_allclose(_values(jo.exponential_decay(0.5, 0.9, 10), steps),
                               [0.5 * 0.9 ** (k / 10) for k in steps], rtol=1e-5)
    np.testing.assert_allclose(_values(jo.exponential_decay(0.5, 0.5, 10, staircase=True, end_value=0.1), steps),
                               [max(0.5 * 0.5 ** (k // 10), 0.1) for k in steps], rtol=1e-5)
    np.testing.assert_allclose(_values(jo.step_decay(1.0, factor=4.0, every=10), steps),
                               [4.0 ** -(k // 10) for k in steps], rtol=1e-5)


def test_warmup_then_the_schedule():
    after = jo.exponential_decay(0.2, 0.5, 10)
    steps = range(0, 40)
    expected = [0.01 + (0.2 - 0.01) * k / 10 if k < 10 else 0.2 * 0.5 ** ((k - 10) / 10) for k in steps]
    np.testing.assert_allclose(_values(jo.warmup(after, 10, init_value=0.01), steps), expected, rtol=1e-5)
    np.testing.assert_allclose(_values(jo.warmup(0.3, 4), [0, 2, 4, 100]), [0.0, 0.15, 0.3, 0.3], rtol=1e-6)


def _sgdr_reference(k, t0, m, lo, hi, gamma):
    start, length, cycle = 0, t0, 0
    while k >= start + length:  # walk through the cycles one by one
        start, length, cycle = start + length, length * m, cycle + 1
    peak = hi * gamma**cycle
    return lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * (k - start) / length))


@pytest.mark.parametrize("m", [1, 2, 3])
def test_cosine_warm_restarts_against_a_loop(m):
    steps = range(0, 200)
    schedule = jo.cosine_warm_restarts(0.5, 5, period_multiplier=m, min_value=0.01, restart_decay=0.8)
    expected = [_sgdr_reference(k, 5, m, 0.01, 0.5, 0.8) for k in steps]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(jax.vmap(schedule))(jnp.arange(200))
    np.testing.assert_allclose(jitted, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m", [1, 2])
def test_cosine_warm_restarts_keeps_its_place_past_float32_integers(m):
    """Optax counts steps in int32; past 2²⁴ a float32 count is rounded, and with
    m = 1 the place in a short cycle was lost (off by 1.5e-3 at 3·10⁷ steps)."""
    steps = np.array([2**24 + 1, 2**25 + 1, 2**25 + 3, 30_000_999, 2**31 - 2], np.int32)
    schedule = jax.jit(jax.vmap(jo.cosine_warm_restarts(1.0, 1000, period_multiplier=m)))
    expected = [_sgdr_reference(int(k), 1000, m, 0.0, 1.0, 1.0) for k in steps]
    # m = 2: the cycles are ~k long, so float32's relative error in k is one in the cycle.
    np.testing.assert_allclose(schedule(jnp.asarray(steps)), expected, atol=1e-6 if m == 1 else 1e-5)


def test_momentum_schedule_and_its_errors():
    np.testing.assert_allclose(_values(jo.momentum_schedule([10, 20]), [0, 9, 10, 19, 20, 10**6]),
                               [0.5, 0.5, 0.9, 0.9, 0.99, 0.99], rtol=1e-6)
    with pytest.raises(ValueError, match="one more value than boundaries"):
        jo.momentum_schedule([10], (0.5, 0.9, 0.99))
    with pytest.raises(ValueError, match="increasing"):
        jo.momentum_schedule([10, 5])
    with pytest.raises(ValueError, match="positive integer"):
        jo.linear_decay(0.1, 0.01, 0)


# ----------------------------------------------------------------------------------
# Reduce on plateau
# ----------------------------------------------------------------------------------


def _state(opt_state):
    return TrainState(params=None, model_state=None, opt_state=opt_state, step=jnp.zeros((), jnp.int32),
                      key=jnp.zeros(2, jnp.uint32))


def test_plateau_divides_by_k_after_patience_with_cooldown_and_floor():
    opt = optax.chain(optax.clip(1.0), optax.inject_hyperparams(jo.momentum)(learning_rate=1.0, momentum=0.9))
    state = _state(opt.init(jnp.zeros(3)))
    cb = jo.ReduceLROnPlateau(factor=4, patience=2, cooldown=1, min_learning_rate=0.05)
    ctx = FitContext(None, None, None, {}, None, 1, 10)
    cb.on_fit_start(ctx, state)
    val_losses = [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.8, 0.85, 0.86]
    rates = []
    for loss in val_losses:
        logs = {"val_loss": loss}
        state = cb.on_epoch_end(ctx, state, logs) or state
        rates.append(logs["learning_rate"])
        assert jo.injected_hyperparams(state.opt_state)["learning_rate"] == pytest.approx(logs["learning_rate"])
    # best 0.9 at epoch 1; epochs 2, 3 without improvement → ÷4 at epoch 3; epoch 4 is the
    # cooldown; 5, 6 → ÷4 (0.0625) at 6; cooldown 7; 8 → wait 1; 0.8 improves; 10, 11 → floor.
    expected = [1, 1, 1, 0.25, 0.25, 0.25, 0.0625, 0.0625, 0.0625, 0.0625, 0.0625, 0.05]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert jo.injected_hyperparams(state.opt_state)["momentum"] == pytest.approx(0.9)  # untouched
    saved = cb.get_state()
    fresh = jo.ReduceLROnPlateau(factor=4, patience=2, cooldown=1, min_learning_rate=0.05)
    fresh.set_state(saved)
    assert fresh.get_state() == saved == {"best": 0.8, "wait": 0, "cooldown_left": 1, "reductions": 3}


def _plateau_rates(cb, opt_state, losses):
    state = _state(opt_state)
    ctx = FitContext(None, None, None, {}, None, 1, 10)
    cb.on_fit_start(ctx, state)
    for loss in losses:
        state = cb.on_epoch_end(ctx, state, {"val_loss": loss}) or state
    return state


def test_plateau_divides_each_parameter_groups_own_rate():
    # Every group was set to the outermost group's rate divided: 0.01 became 0.1.
    opt = optax.multi_transform({"a": optax.inject_hyperparams(optax.sgd)(learning_rate=1.0),
                                 "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.01)},
                                {"a": "a", "b": "b"})
    opt_state = opt.init({"a": jnp.zeros(2), "b": jnp.zeros(2)})
    state = _plateau_rates(jo.ReduceLROnPlateau(factor=10, patience=1), opt_state, [1.0, 2.0])
    inner = state.opt_state.inner_states
    assert float(inner["a"].inner_state.hyperparams["learning_rate"]) == pytest.approx(0.1)
    assert float(inner["b"].inner_state.hyperparams["learning_rate"]) == pytest.approx(0.001)


def test_plateau_never_raises_a_rate_below_the_floor_nor_counts_a_no_op():
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1e-4)  # below the floor from the start
    cb = jo.ReduceLROnPlateau(factor=10, patience=1, min_learning_rate=1e-3)
    state = _plateau_rates(cb, opt.init(jnp.zeros(2)), [1.0, 2.0, 3.0, 4.0])
    assert jo.injected_hyperparams(state.opt_state)["learning_rate"] == pytest.approx(1e-4)  # was raised to 1e-3
    assert cb.reductions == 0
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.02)
    cb = jo.ReduceLROnPlateau(factor=10, patience=1, min_learning_rate=1e-3)
    state = _plateau_rates(cb, opt.init(jnp.zeros(2)), [1.0, 2.0, 3.0, 4.0, 5.0])
    assert jo.injected_hyperparams(state.opt_state)["learning_rate"] == pytest.approx(1e-3)  # 0.002, then the floor
    assert cb.reductions == 2


def test_plateau_cooldown_runs_down_on_improving_epochs_too():
    # factor 2, patience 2, cooldown 2: ÷2 at epoch 2; epochs 3 and 4 (improving) are the
    # cooldown; 5 and 6 do not improve → ÷2 at 6. The cooldown had waited for non-improving
    # epochs, and the second division came at epoch 8.
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    cb = jo.ReduceLROnPlateau(factor=2, patience=2, cooldown=2)
    state, rates = _state(opt.init(jnp.zeros(2))), []
    ctx = FitContext(None, None, None, {}, None, 1, 10)
    cb.on_fit_start(ctx, state)
    for loss in [1.0, 1.1, 1.2, 0.9, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89]:
        logs = {"val_loss": loss}
        state = cb.on_epoch_end(ctx, state, logs) or state
        rates.append(float(logs["learning_rate"]))
    assert rates == [1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]


def test_plateau_and_early_stopping_refuse_a_negative_min_delta_or_patience():
    from jdl.training import EarlyStopping

    with pytest.raises(ValueError, match="min_delta must be >= 0"):
        jo.ReduceLROnPlateau(min_delta=-0.1)
    with pytest.raises(ValueError, match="min_delta must be >= 0"):  # every worse epoch counted as better
        EarlyStopping(min_delta=-0.5)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="patience must be an integer >= 0"):
            EarlyStopping(patience=bad)


def test_step_decay_refuses_a_factor_below_one_and_restarts_keep_float64():
    with pytest.raises(ValueError, match="factor must be >= 1"):
        jo.step_decay(1.0, factor=0.5, every=1)  # it grew the rate: 8.0 at step 3
    with jax.enable_x64(True):
        assert jo.cosine_warm_restarts(1.0, 4)(3).dtype == jnp.float64
        assert jo.cosine_warm_restarts(1.0, 4, period_multiplier=2)(3).dtype == jnp.float64


def test_plateau_needs_an_injected_constant_learning_rate():
    cb = jo.ReduceLROnPlateau()
    ctx = FitContext(None, None, None, {}, None, 1, 10)
    with pytest.raises(ValueError, match="inject_hyperparams"):
        cb.on_fit_start(ctx, _state(jo.adam(1e-3).init(jnp.zeros(2))))
    scheduled = optax.inject_hyperparams(jo.adam)(learning_rate=jo.linear_decay(1e-3, 1e-4, 10))
    with pytest.raises(ValueError, match="schedule"):
        cb.on_fit_start(ctx, _state(scheduled.init(jnp.zeros(2))))


def test_plateau_inside_fit_changes_the_rate_the_steps_use():
    from jdl.data import two_moons
    from jdl.models import get_model
    from jdl.nn import cross_entropy
    from jdl.training import fit

    ds = two_moons(128)
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(4,))
    opt = optax.inject_hyperparams(jo.sgd)(learning_rate=0.5)
    # min_delta so large that no epoch counts as an improvement: ÷2 every epoch after the first.
    cb = jo.ReduceLROnPlateau(factor=2, patience=1, min_delta=10.0)
    result = fit(model, cross_entropy, opt, ds, epochs=4, batch_size=64, callbacks=[cb, jo.LogHyperparams()],
                 progress=False)
    assert [h["learning_rate"] for h in result.history] == pytest.approx([0.5, 0.25, 0.125, 0.0625])
    assert jo.injected_hyperparams(result.state.opt_state)["learning_rate"] == pytest.approx(0.0625)


# ----------------------------------------------------------------------------------
# Clipping, penalties, weight decay
# ----------------------------------------------------------------------------------

PARAMS = {"dense": {"kernel": jnp.array([[1.0, -2.0], [0.0, 3.0]]), "bias": jnp.array([0.5, -0.5])},
          "head": {"kernel": jnp.array([[-1.0], [4.0]]), "bias": jnp.array([2.0])}}
GRADS = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p) - p, PARAMS)


def _kernel_only(path, param):
    del param
    return {"dense/kernel": 0.1, "head/kernel": 0.3}.get(path, 0.0)


def test_clip_by_value_and_by_global_norm():
    g = {"a": jnp.array([3.0, -0.5]), "b": jnp.array([-4.0])}
    clipped, _ = jo.clip_by_value(1.0).update(g, optax.EmptyState())
    np.testing.assert_allclose(clipped["a"], [1.0, -0.5])
    np.testing.assert_allclose(clipped["b"], [-1.0])
    norm = math.sqrt(9 + 0.25 + 16)
    clipped, _ = jo.clip_by_global_norm(2.0).update(g, optax.EmptyState())
    np.testing.assert_allclose(clipped["a"], np.array([3.0, -0.5]) * 2 / norm, rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [-4.0 * 2 / norm], rtol=1e-6)
    small, _ = jo.clip_by_global_norm(10.0).update(g, optax.EmptyState())
    np.testing.assert_allclose(small["a"], g["a"])
    with pytest.raises(ValueError, match="positive"):
        jo.clip_by_value(0.0)


@pytest.mark.parametrize("coefficients", [0.2, _kernel_only], ids=["global", "per-layer"])
def test_penalties_add_the_gradient_of_the_penalty(coefficients):
    l1, _ = jo.add_l1_penalty(coefficients).update(GRADS, optax.EmptyState(), PARAMS)
    l2, _ = jo.add_l2_penalty(coefficients).update(GRADS, optax.EmptyState(), PARAMS)
    d1 = jax.grad(lambda p: jo.penalty(p, l1=coefficients))(PARAMS)
    d2 = jax.grad(lambda p: jo.penalty(p, l2=coefficients))(PARAMS)
    d1 = jax.tree.map(lambda d, w: jnp.where(w == 0, 0.0, d), d1, PARAMS)  # subgradient 0 at w = 0
    for got, want in ((l1, d1), (l2, d2)):
        jax.tree.map(lambda a, g, d: np.testing.assert_allclose(a, g + d, rtol=1e-6), got, GRADS, want)
    np.testing.assert_allclose(l1["dense"]["kernel"][1, 0], GRADS["dense"]["kernel"][1, 0])
    # By hand: the head kernel's L1 term is 0.3·sign(w) per-layer, 0.2·sign(w) globally.
    c = 0.3 if callable(coefficients) else 0.2
    np.testing.assert_allclose(l1["head"]["kernel"], GRADS["head"]["kernel"] + c * jnp.array([[-1.0], [1.0]]))
    if callable(coefficients):  # biases are left alone
        np.testing.assert_allclose(l2["dense"]["bias"], GRADS["dense"]["bias"])
    expected_l2 = 0.5 * (0.1 * (1 + 4 + 9) + 0.3 * (1 + 16)) if callable(coefficients) else None
    if expected_l2 is not None:
        assert float(jo.penalty(PARAMS, l2=coefficients)) == pytest.approx(expected_l2)


def test_weight_decay_after_sgd_is_the_seed_l2_rule():
    """w ← (1 − εα) w − ε ∇J(w) (seed 001)."""
    lr, alpha = 0.1, 0.01
    opt = optax.chain(jo.sgd(lr), jo.weight_decay(lr * alpha))
    updates, _ = opt.update(GRADS, opt.init(PARAMS), PARAMS)
    new = optax.apply_updates(PARAMS, updates)
    expected = jax.tree.map(lambda w, g: (1 - lr * alpha) * w - lr * g, PARAMS, GRADS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new, expected)
    # And L2 in the gradient before SGD is the same rule.
    opt = optax.chain(jo.add_l2_penalty(alpha), jo.sgd(lr))
    updates, _ = opt.update(GRADS, opt.init(PARAMS), PARAMS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 optax.apply_updates(PARAMS, updates), expected)


def test_weight_decay_with_schedule_and_per_layer_coefficients():
    opt = jo.weight_decay(jo.step_decay(0.1, factor=10, every=1), coefficients=_kernel_only)
    state = opt.init(PARAMS)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    first, state = opt.update(zeros, state, PARAMS)
    second, state = opt.update(zeros, state, PARAMS)
    np.testing.assert_allclose(first["head"]["kernel"], -0.1 * 0.3 * PARAMS["head"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(second["head"]["kernel"], -0.01 * 0.3 * PARAMS["head"]["kernel"], rtol=1e-5)
    np.testing.assert_allclose(first["dense"]["bias"], 0.0)


def test_coefficient_tree_checks_the_structure():
    with pytest.raises(ValueError, match="structure of the parameters"):
        jo.coefficient_tree({"dense": 0.1}, PARAMS)
    tree = jo.coefficient_tree(jax.tree.map(lambda _: 0.5, PARAMS), PARAMS)
    assert jax.tree.leaves(tree) == [0.5] * 4


def test_per_layer_paths_of_an_nnx_model():
    from jdl.models import get_model

    model = get_model("mlp", (4,), 3, hidden=(5,))
    params = model.init(jax.random.key_data(jax.random.key(0)), jnp.zeros((1, 4))).params
    paths = []
    jo.coefficient_tree(lambda path, p: paths.append(path) or 0.0, params)
    assert sorted(paths) == ["head/bias/value", "head/kernel/value", "layers/0/bias/value",
                             "layers/0/kernel/value"]


def test_plateau_never_takes_a_nan_as_the_best_value():
    """A NaN used to become the best value while there was no finite best yet
    (anything "improved" on a non-finite best), so a run that diverged from its
    first epoch never had its rate divided. A NaN now counts against patience."""
    opt = optax.inject_hyperparams(jo.sgd)(learning_rate=1.0)
    state = _state(opt.init(jnp.zeros(3)))
    ctx = FitContext(None, None, None, {}, None, 1, 10)
    nan = float("nan")
    for mode, values, expected in (
        ("min", [nan, nan, nan], [1.0, 0.5, 0.5]),
        ("max", [nan, nan, nan, nan], [1.0, 0.5, 0.5, 0.25]),
        ("min", [nan, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5]),  # the first finite value is the best
    ):
        cb = jo.ReduceLROnPlateau(factor=2, patience=2, mode=mode)
        cb.on_fit_start(ctx, state)
        s, rates = state, []
        for value in values:
            logs = {"val_loss": value}
            s = cb.on_epoch_end(ctx, s, logs) or s
            rates.append(logs["learning_rate"])
        assert rates == pytest.approx(expected)
    cb = jo.ReduceLROnPlateau(factor=2, patience=1, relative=True, min_delta=0.1)
    cb.on_fit_start(ctx, state)
    s = state
    for value in (1.0, 0.95, 0.85):  # 0.95 is within 10 % of 1.0; 0.85 is not
        s = cb.on_epoch_end(ctx, s, {"val_loss": value}) or s
    assert cb.best == 0.85 and cb.reductions == 1


def test_plateau_refuses_a_learning_rate_array():
    opt = optax.inject_hyperparams(jo.sgd)(learning_rate=jnp.array([0.1, 0.2]))
    cb = jo.ReduceLROnPlateau()
    with pytest.raises(ValueError, match="scalar 'learning_rate'"):
        cb.on_fit_start(FitContext(None, None, None, {}, None, 1, 10), _state(opt.init(jnp.zeros(2))))


def test_schedules_take_numpy_integer_step_counts():
    """Step counts computed with NumPy (np.int64(n) // batch) were refused."""
    steps = np.int64(1000) // 10
    for schedule, reference in ((jo.linear_decay(1.0, 0.1, steps), jo.linear_decay(1.0, 0.1, 100)),
                                (jo.cosine_warm_restarts(1.0, steps, period_multiplier=np.int32(2)),
                                 jo.cosine_warm_restarts(1.0, 100, period_multiplier=2))):
        assert [float(schedule(k)) for k in (0, 50, 150)] == [float(reference(k)) for k in (0, 50, 150)]


@pytest.mark.parametrize("build, message", [
    (lambda: jo.weight_decay(-0.1), r"rate must be in \[0, 1\)"),       # grew the weights
    (lambda: jo.weight_decay(2.0), r"rate must be in \[0, 1\)"),        # flipped their sign
    (lambda: jo.weight_decay(float("nan")), r"rate must be in \[0, 1\)"),
    (lambda: jo.weight_decay(0.1, coefficients=-1.0), "coefficients must be a finite number >= 0"),
    (lambda: jo.add_l2_penalty(-1e-4), "coefficients must be a finite number >= 0"),
    (lambda: jo.add_l1_penalty(float("nan")), "coefficients must be a finite number >= 0"),
    (lambda: jo.add_l2_penalty({"w": -1.0}), "coefficients must be a finite number >= 0"),
    (lambda: jo.clip_by_global_norm(-1.0), "max_norm must be a positive finite number"),  # reversed g
    (lambda: jo.clip_by_global_norm(0), "max_norm must be a positive finite number"),     # zeroed g
    (lambda: jo.clip_by_value(float("inf")), "max_value must be a positive finite number"),
])
def test_regularisers_refuse_bad_settings_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_coefficient_function_is_checked_when_it_runs_and_penalty_of_nothing_is_zero():
    t = jo.add_l2_penalty(lambda path, w: -1.0)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="the coefficient for 'w' must be a finite number >= 0"):
        t.update(params, t.init(params), params)
    assert float(jo.penalty({}, l2=1e-3)) == 0.0
    np.testing.assert_allclose(jo.clip_by_global_norm(2.0).update({"a": jnp.array([3.0, 4.0])},
                                                                   optax.EmptyState())[0]["a"], [1.2, 1.6])


def test_get_optimizer_refuses_bad_names_and_options_clearly():
    with pytest.raises(ValueError, match="optimizer name must be a non-empty string"):
        jo.get_optimizer(None, 1e-3)
    with pytest.raises(ValueError, match="optimizer name must be a non-empty string"):
        jo.get_optimizer(["adam"], 1e-3)
    with pytest.raises(ValueError, match=r"'adam' does not take these options.*its options are \['b1', 'b2'"):
        jo.get_optimizer("adam", 1e-3, beta1=0.9)
    with pytest.raises(ValueError, match=r"'jdl:rmsprop' does not take these options.*'decay'"):
        jo.get_optimizer("jdl:rmsprop", 1e-3, rho=0.9)
    with pytest.raises(ValueError, match="learning_rate must be a positive number, got True"):
        jo.get_optimizer("adam", True)
    assert jo.get_optimizer("jdl:rmsprop", 1e-3, decay=0.95) is not None


def test_register_optimizer_guards_jdl_names_and_existing_ones(monkeypatch):
    monkeypatch.setattr(jo.registry, "OPTIMIZERS", dict(jo.registry.OPTIMIZERS))
    with pytest.raises(TypeError, match="must be callable"):
        jo.register_optimizer("mine", 3)
    with pytest.raises(ValueError, match="prefix 'jdl:' is kept for jdl's own"):
        jo.register_optimizer("jdl:adam", jo.sgd)  # silently replaced jdl's Adam
    jo.register_optimizer("mine", jo.sgd)
    with pytest.raises(ValueError, match="'mine' is already registered; pass overwrite=True"):
        jo.register_optimizer("mine", jo.adam)
    jo.register_optimizer("mine", jo.adam, overwrite=True)
    assert jo.registry.OPTIMIZERS["mine"] is jo.adam
