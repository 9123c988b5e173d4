"""The training core: model adapters, pure steps, fused steps, compile counts, vmap, sharding."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jdl.data import digits, epoch_indices, xor
from jdl.models import MLP, get_model
from jdl.nn import cross_entropy
from jdl.training import (
    create_train_state,
    data_parallel_mesh,
    fit,
    from_function,
    from_linen,
    from_nnx,
    make_eval_step,
    make_evaluate,
    make_fused_train_step,
    make_loss,
    make_train_step,
    replicate,
    shard_batch,
)
from jdl.training.step import uses_convolution


@pytest.fixture(scope="module")
def data():
    ds = digits()
    return ds, {k: jnp.asarray(v) for k, v in ds.train.items()}


def _tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _tree_close(a, b, rtol, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- the model protocol --------------------------------------------------------------------


def _nnx_model():
    return from_nnx(MLP(64, (32,), 10, dropout_rate=0.5, batch_norm=True, rngs=nnx.Rngs(0, dropout=1)))


def test_nnx_adapter_train_eval_dropout_and_batchnorm(data):
    ds, _ = data
    model = _nnx_model()
    x = jnp.asarray(ds.train["x"][:16])
    v = model.init(jax.random.key_data(jax.random.key(0)), x)
    assert set(v.model_state["norms"][0]) == {"mean", "var"}
    k1, k2 = (jax.random.key_data(jax.random.key(i)) for i in (1, 2))
    y1, s1 = model.apply(v, x, train=True, key=k1)
    y1b, _ = model.apply(v, x, train=True, key=k1)
    y2, _ = model.apply(v, x, train=True, key=k2)
    np.testing.assert_array_equal(y1, y1b)  # dropout is a function of the key
    assert not np.allclose(y1, y2)  # a different key, a different mask
    # training updates the running statistics; evaluation does not, and is deterministic
    assert not np.allclose(s1["norms"][0]["mean"][...], v.model_state["norms"][0]["mean"][...])
    e1, se = model.apply(v, x, train=False, key=k1)
    e2, _ = model.apply(v, x, train=False, key=k2)
    np.testing.assert_array_equal(e1, e2)
    assert _tree_equal(se, v.model_state)


def test_linen_module_that_samples_in_eval_runs_and_is_reproducible_without_a_key():
    # As from_nnx: without a key the streams come from key(0). A Linen module drawing
    # from an RNG collection in eval had no key at all and failed.
    class Sampler(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            mean = nn.Dense(2)(x)
            return mean + jax.random.normal(self.make_rng("sample"), mean.shape)

    model = from_linen(Sampler(), rng_collections=("sample",))
    x = jnp.ones((3, 4))
    v = model.init(jax.random.key(0), x)
    a, _ = model.apply(v, x, train=False)
    b, _ = model.apply(v, x, train=False)
    np.testing.assert_array_equal(a, b)
    c, _ = model.apply(v, x, train=False, key=jax.random.key(5))
    assert not np.array_equal(a, c)


def test_linen_adapter_batchnorm_and_dropout(data):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dense(16)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
            return nn.Dense(10)(x)

    ds, _ = data
    model = from_linen(Net())
    x = jnp.asarray(ds.train["x"][:8])
    v = model.init(jax.random.key_data(jax.random.key(0)), x)
    assert "batch_stats" in v.model_state and "Dense_0" in v.params
    k = jax.random.key_data(jax.random.key(3))
    y, s = model.apply(v, x, train=True, key=k)
    assert y.shape == (8, 10)
    assert not _tree_equal(s, v.model_state)
    e, s_eval = model.apply(v, x, train=False, key=None)
    assert _tree_equal(s_eval, v.model_state)
    # and it trains through the same step
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    step = make_train_step(model, cross_entropy, opt)
    batch = {k: jnp.asarray(val[:32]) for k, val in ds.train.items()}
    losses = []
    for _ in range(20):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0]


def test_function_adapter_matches_closed_form_logistic_regression():
    x = jnp.array([[1.0, 2.0], [0.5, -1.0], [-1.0, 0.0]])
    y = jnp.array([1, 0, 0])

    def logits(params, inputs):
        return inputs @ params["w"] + params["b"][None, :]

    w0 = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    model = from_function(logits, w0)
    opt = optax.sgd(1.0)
    state = create_train_state(model, opt, key=0, batch={"x": x, "y": y})
    state, _ = make_train_step(model, cross_entropy, opt)(state, {"x": x, "y": y})
    # at w = 0, softmax is uniform: ∇_W = Xᵀ (1/2 − onehot(y)) / n, ∇_b = mean(1/2 − onehot(y))
    residual = 0.5 - jax.nn.one_hot(y, 2)
    np.testing.assert_allclose(state.params["w"], -(x.T @ residual) / 3, rtol=1e-6)
    np.testing.assert_allclose(state.params["b"], -residual.mean(0), rtol=1e-6)


def test_numpy_float64_initial_parameters_are_refused_and_float32_ones_resume(tmp_path):
    # NumPy float64 parameters were rounded to float32 by the first step, and the
    # run's checkpoint then failed to resume ("float32 in the checkpoint but float64 now").
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(40, 4)).astype(np.float32), "y": rng.integers(0, 2, 40).astype(np.int32)}

    def logits(params, inputs):
        return inputs @ params["w"] + params["b"]

    wide = {"w": rng.normal(size=(4, 2)) * 0.1, "b": np.float64(0.0)}
    with pytest.raises(ValueError, match=r"initial parameters \['b'\] is float64 .* 32-bit mode"):
        create_train_state(from_function(logits, wide), optax.adam(1e-2), key=0, batch=data)
    narrow = jax.tree.map(lambda a: np.asarray(a, np.float32), wide)
    model = from_function(logits, narrow)
    state = create_train_state(model, optax.adam(1e-2), key=0, batch=data)
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(state.params))
    fit(model, cross_entropy, optax.adam(1e-2), data, epochs=1, batch_size=20, out_dir=tmp_path, progress=False)
    resumed = fit(model, cross_entropy, optax.adam(1e-2), data, epochs=2, batch_size=20, out_dir=tmp_path,
                  resume=True, progress=False)
    assert len(resumed.history) == 2


# --- steps ---------------------------------------------------------------------------------


def test_train_step_compiles_once_over_many_calls_and_epochs(data):
    ds, train = data
    traces = []

    def counting_loss(logits, labels):
        traces.append(1)
        return cross_entropy(logits, labels)

    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    opt = optax.adam(1e-3)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    step = make_train_step(model, counting_loss, opt)
    key = jax.random.key(0)
    for epoch in range(3):
        full, _ = epoch_indices(key, epoch, len(ds.train["y"]), 64)
        for idx in full:
            state, _ = step(state, {k: v[idx] for k, v in train.items()})
    assert int(state.step) == 3 * (len(ds.train["y"]) // 64)
    assert len(traces) == 1


def test_fit_compilations_do_not_grow_with_epochs(data):
    ds, _ = data
    counts = []
    for epochs in (2, 5):
        traces = []

        def counting_loss(logits, labels, traces=traces):
            traces.append(1)
            return cross_entropy(logits, labels)

        model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
        fit(model, counting_loss, optax.adam(1e-3), ds, epochs=epochs, batch_size=100)
        counts.append(len(traces))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("loop", ["scan", "unrolled", "python"])
def test_fused_steps_equal_single_steps(data, loop):
    ds, train = data
    model = _nnx_model()  # dropout and BatchNorm: keys and model state must flow identically
    # SGD, not Adam: the bias before BatchNorm has a zero gradient up to rounding, and Adam's
    # normalisation would blow that rounding noise up to full-size steps.
    opt = optax.sgd(0.1, momentum=0.9)
    state0 = create_train_state(model, opt, key=0, batch=ds.train)
    single = make_train_step(model, cross_entropy, opt)
    fused = make_fused_train_step(model, cross_entropy, opt, loop=loop)
    indices, _ = epoch_indices(jax.random.key(5), 0, len(ds.train["y"]), 32)
    indices = indices[:8]
    state_f, metrics_f = fused(state0, train, indices)
    state_s, losses = state0, []
    for idx in indices:
        state_s, m = single(state_s, {k: v[idx] for k, v in train.items()})
        losses.append(m["loss"])
    assert metrics_f["loss"].shape == (8,)
    _tree_close(metrics_f["loss"], jnp.stack(losses), rtol=1e-5)
    _tree_close(state_f.params, state_s.params, rtol=1e-5, atol=1e-6)
    _tree_close(state_f.model_state, state_s.model_state, rtol=1e-5, atol=1e-6)
    assert int(state_f.step) == int(state_s.step) == 8


def test_fused_auto_avoids_scan_for_convolutions_on_cpu():
    ds = digits(flatten=False)
    opt = optax.sgd(0.1)
    data = {k: jnp.asarray(v) for k, v in ds.train.items()}
    idx = jnp.arange(64).reshape(2, 32)
    for name, expected in (("cnn", "python"), ("mlp", "scan")):
        d = data if name == "cnn" else {"x": data["x"].reshape(-1, 64), "y": data["y"]}
        model = get_model(name, d["x"].shape[1:], 10, hidden=(16,))
        state = create_train_state(model, opt, key=0, batch=d)
        fused = make_fused_train_step(model, cross_entropy, opt)
        assert fused.loop_kind(state, d, idx) == expected
        _, m = fused(state, d, idx)
        assert m["loss"].shape == (2,)
    assert uses_convolution(lambda x: jax.lax.conv(x, jnp.ones((1, 1, 3, 3)), (1, 1), "SAME"), jnp.ones((1, 1, 8, 8)))


def test_evaluate_is_the_exact_mean_over_all_examples(data):
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    state = create_train_state(model, optax.sgd(0.1), key=1, batch=ds.train)
    full = make_eval_step(model, cross_entropy)(state, {k: jnp.asarray(v) for k, v in ds.test.items()})
    chunked = make_evaluate(model, cross_entropy, batch_size=100)(state, ds.test)  # 359 = 3×100 + 59
    np.testing.assert_allclose(chunked["loss"], full["loss"], rtol=1e-5)
    np.testing.assert_allclose(chunked["accuracy"], full["accuracy"], rtol=1e-6)


def test_fit_train_metrics_weigh_the_partial_minibatch_by_its_size(data):
    """With a learning rate of 0 the epoch's train_loss is the full-set mean; the
    final one-example minibatch used to weigh as much as a full one of 64."""
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(8,))
    subset = {k: v[:129] for k, v in train.items()}  # two minibatches of 64, then one of 1
    result = fit(model, cross_entropy, optax.sgd(0.0), subset, epochs=1, batch_size=64, progress=False)
    exact = make_evaluate(model, cross_entropy)(result.state, subset)
    np.testing.assert_allclose(result.history[0]["train_loss"], exact["loss"], rtol=1e-6)
    np.testing.assert_allclose(result.history[0]["train_accuracy"], exact["accuracy"], rtol=1e-6)


def test_any_optax_transformation_drops_in(data):
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    batch = {k: v[:128] for k, v in train.items()}
    optimizers = [
        optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=1e-4)),
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
        optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
        optax.lbfgs(),  # needs value_fn: receives it as an extra argument
    ]
    for opt in optimizers:
        state = create_train_state(model, opt, key=0, batch=batch)
        step = make_train_step(model, cross_entropy, opt)
        first = None
        for _ in range(6):
            state, m = step(state, batch)
            first = float(m["loss"]) if first is None else first
        assert float(m["loss"]) < first


def test_vmap_over_seeds_equals_separate_runs(data):
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    opt = optax.adam(1e-2)
    batch = {k: v[:64] for k, v in train.items()}
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in range(3)])
    states = jax.vmap(lambda k: create_train_state(model, opt, key=k, batch=batch))(keys)
    step = make_train_step(model, cross_entropy, opt, jit=False)
    vstep = jax.jit(jax.vmap(step, in_axes=(0, None)))
    for _ in range(3):
        states, metrics = vstep(states, batch)
    assert metrics["loss"].shape == (3,)
    single = make_train_step(model, cross_entropy, opt)
    for i in range(3):
        s = create_train_state(model, opt, key=keys[i], batch=batch)
        for _ in range(3):
            s, m = single(s, batch)
        _tree_close(jax.tree.map(lambda a: a[i], states.params), s.params, rtol=1e-5, atol=1e-6)


# --- sharding ------------------------------------------------------------------------------


def test_step_on_sharded_batch_equals_single_device(data):
    assert len(jax.devices()) >= 4, "conftest sets jax_num_cpu_devices=4"
    ds, train = data
    model = _nnx_model()
    opt = optax.sgd(0.1, momentum=0.9)  # see test_fused_steps_equal_single_steps on Adam
    batch = {k: v[:64] for k, v in train.items()}
    state = create_train_state(model, opt, key=0, batch=batch)
    step = make_train_step(model, cross_entropy, opt)
    mesh = data_parallel_mesh()
    sharded_state, sharded_batch = replicate(state, mesh), shard_batch(batch, mesh)
    assert len(sharded_batch["x"].sharding.device_set) == 4
    s1, s4 = state, sharded_state
    for _ in range(3):
        s1, m1 = step(s1, batch)
        s4, m4 = step(s4, sharded_batch)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    _tree_close(s4.params, s1.params, rtol=1e-4, atol=1e-6)
    _tree_close(s4.model_state, s1.model_state, rtol=1e-4, atol=1e-6)


def test_fit_with_a_data_parallel_mesh_matches_single_device(data):
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    kw = dict(epochs=2, batch_size=64, drop_last=True)
    plain = fit(model, cross_entropy, optax.adam(1e-2), ds, **kw)
    mesh = data_parallel_mesh()
    sharded = fit(model, cross_entropy, optax.adam(1e-2), ds, mesh=mesh, **kw)
    _tree_close(sharded.state.params, plain.state.params, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        fit(model, cross_entropy, optax.adam(1e-2), ds, epochs=1, batch_size=30, mesh=mesh)


# --- fit -----------------------------------------------------------------------------------


def test_fit_learns_xor_with_full_batch_gradient_descent():
    ds = xor()
    model = get_model("mlp", ds.input_shape, 2, hidden=(16,))
    result = fit(model, cross_entropy, optax.adam(0.05), ds, epochs=300, batch_size=4)
    assert result.history[-1]["train_accuracy"] == 1.0
    assert result.history[-1]["val_loss"] < 0.05


def test_fit_history_and_callbacks(data, tmp_path):
    from jdl.training import Callback, EarlyStopping

    ds, _ = data

    class Recorder(Callback):
        def __init__(self):
            self.steps = []

        def on_steps_end(self, ctx, state, metrics):
            self.steps.append(ctx.step)

        def on_epoch_end(self, ctx, state, logs):
            logs["param_norm"] = float(optax.tree.norm(state.params))

    rec = Recorder()
    model = get_model("mlp", ds.input_shape, 10, hidden=(16,))
    result = fit(
        model,
        cross_entropy,
        optax.adam(1e-2),
        ds,
        epochs=3,
        batch_size=128,
        steps_per_call=4,
        callbacks=[rec],
        out_dir=tmp_path,
    )
    steps_per_epoch = -(-len(ds.train["y"]) // 128)
    assert [r["step"] for r in result.history] == [steps_per_epoch * (e + 1) for e in range(3)]
    assert rec.steps[:3] == [4, 8, 9]  # 9 full batches in calls of 4, then the partial batch
    assert all({"train_loss", "val_loss", "val_accuracy", "param_norm"} <= set(r) for r in result.history)
    lines = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 3
    # early stopping ends the run and restores the best parameters
    stopper = EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    stopped = fit(model, cross_entropy, optax.adam(1e-2), ds, epochs=10, batch_size=128, callbacks=[stopper])
    assert len(stopped.history) == 2 and stopper.best_epoch == 0


def test_gradient_norm_is_reported_on_request(data):
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(8,))
    opt = optax.sgd(0.0)  # no update: the reported norm is the gradient at the initial point
    batch = {k: v[:32] for k, v in train.items()}
    state = create_train_state(model, opt, key=0, batch=batch)
    _, plain = make_train_step(model, cross_entropy, opt)(state, batch)
    _, with_norm = make_train_step(model, cross_entropy, opt, grad_norm=True)(state, batch)
    assert "grad_norm" not in plain
    loss = make_loss(model, cross_entropy, train=True)
    grads = jax.grad(lambda p: loss(p, state.model_state, batch)[0])(state.params)
    expected = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(with_norm["grad_norm"]), expected, rtol=1e-5)
    history = fit(model, cross_entropy, optax.sgd(0.1), ds, epochs=1, batch_size=128, grad_norm=True).history
    assert history[0]["train_grad_norm"] > 0


def test_fit_checks_every_label_not_only_the_first_batch(data):
    """Sorted by label, the first minibatch held only 0s: a 5-output model then
    trained on labels 0 … 9 to a NaN loss without a word."""
    ds, _ = data
    order = np.argsort(ds.train["y"], kind="stable")
    train = {k: np.asarray(v)[order] for k, v in ds.train.items()}
    model = get_model("mlp", ds.input_shape, 5, hidden=(8,))
    with pytest.raises(ValueError, match=r"the training data has labels in \[0, 9\] but the model has 5 outputs"):
        fit(model, cross_entropy, optax.sgd(0.1), train, epochs=1, batch_size=64, progress=False)
    low = {k: v[train["y"] < 5] for k, v in train.items()}
    with pytest.raises(ValueError, match=r"the validation data has labels in \[0, 9\]"):
        fit(model, cross_entropy, optax.sgd(0.1), low, val_data=train, epochs=1, batch_size=64, progress=False)


def test_seeds_and_keys_are_checked(data):
    """NumPy integer seeds (a sweep's np.arange) crashed deep in JAX; seeds past
    2³² silently gave a smaller seed's key; raw key data of the wrong kind was
    taken as is."""
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    base = create_train_state(model, opt, key=7, batch=ds.train)
    for seed in (np.int64(7), np.int32(7), jax.random.key(7), jax.random.key_data(jax.random.key(7))):
        state = create_train_state(model, opt, key=seed, batch=ds.train)
        assert _tree_equal(state.params, base.params) and np.array_equal(state.key, base.key)
    for bad, message in ((2**32 + 7, r"in \[0, 2\*\*32\)"), (-1, r"in \[0, 2\*\*32\)"), (True, "an integer"),
                         (jnp.zeros(3, jnp.uint32), "raw data"), (jnp.zeros(2, jnp.float32), "raw data")):
        with pytest.raises(ValueError, match=message):
            create_train_state(model, opt, key=bad, batch=ds.train)


def test_fused_step_evaluate_and_fit_refuse_bad_indices_and_empty_data(data):
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    fused = make_fused_train_step(model, cross_entropy, opt)
    n = len(ds.train["y"])
    with pytest.raises(ValueError, match=rf"indices range over \[0, {n}\] but the data has {n} examples"):
        fused(state, train, jnp.array([[0, n]]))  # jnp.take filled the row with NaN
    with pytest.raises(ValueError, match="2-D integer array"):
        fused(state, train, jnp.arange(8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        make_evaluate(model, cross_entropy, batch_size=0)
    with pytest.raises(ValueError, match="evaluation data is empty"):
        make_evaluate(model, cross_entropy)(state, {k: v[:0] for k, v in train.items()})
    with pytest.raises(ValueError, match="validation data is empty"):
        fit(model, cross_entropy, opt, ds.train, val_data={k: v[:0] for k, v in ds.train.items()}, epochs=1,
            batch_size=64, progress=False)


def test_fit_refuses_bad_settings_before_touching_the_run_directory(data, tmp_path):
    """epochs=2.9 trained 2 epochs and True 1; a generator of callbacks was spent
    after the first epoch's hooks; a mesh without a "data" axis gave KeyError;
    empty training data asked for a batch size of "at most 0"; and the
    checkpoint directory was created (and its manager left open) before a
    failing label check."""
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    small = {k: v[:128] for k, v in ds.train.items()}
    run = dict(batch_size=64, progress=False)
    for bad in (2.9, True, "3", -1):
        with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
            fit(model, cross_entropy, opt, small, epochs=bad, **run)
    with pytest.raises(TypeError, match="must be jdl.training.Callback objects"):
        fit(model, cross_entropy, opt, small, epochs=1, callbacks=[lambda *a: None], **run)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("batch",))
    with pytest.raises(ValueError, match="no 'data' axis"):
        fit(model, cross_entropy, opt, small, epochs=1, mesh=mesh, **run)
    with pytest.raises(ValueError, match="training data is empty"):
        fit(model, cross_entropy, opt, {k: v[:0] for k, v in small.items()}, epochs=1, **run)
    five = get_model("mlp", ds.input_shape, 5, hidden=(4,))
    with pytest.raises(ValueError, match="labels in"):
        fit(five, cross_entropy, opt, small, epochs=1, out_dir=tmp_path / "run", **run)
    assert not (tmp_path / "run" / "checkpoints").exists()

    from jdl.training import Callback

    class Epochs(Callback):
        seen = 0

        def on_epoch_end(self, ctx, state, logs):
            Epochs.seen += 1

    fit(model, cross_entropy, opt, small, epochs=2, callbacks=(cb for cb in [Epochs()]), **run)
    assert Epochs.seen == 2


def test_steps_refuse_lists_and_empty_batches_before_tracing(data):
    """Lists reached the trace and failed there with TracerArrayConversionError;
    an empty batch failed with ZeroDivisionError."""
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    x, y = ds.train["x"][:4], ds.train["y"][:4]
    for step in (make_train_step(model, cross_entropy, opt), make_eval_step(model, cross_entropy)):
        with pytest.raises(TypeError, match=r"batch entry 'x' is a list, not an array"):
            step(state, {"x": x.tolist(), "y": y})
        with pytest.raises(TypeError, match=r"batch entry 'y' is a list"):
            step(state, {"x": x, "y": list(y)})
        with pytest.raises(ValueError, match="the batch holds no examples"):
            step(state, {"x": x[:0], "y": y[:0]})


def test_fit_warns_of_a_final_minibatch_of_one_for_batch_statistics(data):
    """BatchNorm's variance over a final minibatch of one example is 0; nothing said so."""
    ds, _ = data
    small = {k: v[:129] for k, v in ds.train.items()}
    bn = get_model("mlp", ds.input_shape, 10, hidden=(4,), batch_norm=True)
    with pytest.warns(UserWarning, match="final minibatch of one example"):
        fit(bn, cross_entropy, optax.sgd(0.1), small, epochs=1, batch_size=64, progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(bn, cross_entropy, optax.sgd(0.1), small, epochs=1, batch_size=64, drop_last=True, progress=False)
        plain = get_model("mlp", ds.input_shape, 10, hidden=(4,))
        fit(plain, cross_entropy, optax.sgd(0.1), small, epochs=1, batch_size=64, progress=False)


def test_learning_curves_mark_every_epoch_and_return_the_file_written(tmp_path, monkeypatch):
    """A one-epoch run's curve was blank (a line of one point has no length), and
    a path without an extension returned a name matplotlib had not written."""
    import matplotlib.figure

    from jdl.plotting import plot_learning_curves

    drawn = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (drawn.append(fig), original(fig, *a, **k))[1])
    history = [{"epoch": 0, "train_loss": 0.5, "val_loss": 0.6, "train_accuracy": 0.8, "val_accuracy": 0.7}]
    path = plot_learning_curves(history, str(tmp_path / "curve"))
    assert path == str(tmp_path / "curve.png") and os.path.isfile(path)
    lines = [line for ax in drawn[0].axes for line in ax.get_lines()]
    assert len(lines) == 4 and all(line.get_marker() == "o" for line in lines)


def test_run_files_are_strict_json_written_all_at_once(tmp_path):
    """summary.json took NumPy float32 metrics with a TypeError half-way through
    (leaving summary.json.tmp), and NaN was written as bare NaN, which is not JSON."""
    import json

    from jdl.run import read_history, write_json_atomic
    from jdl.training.fit import _write_history

    path = tmp_path / "summary.json"
    write_json_atomic(path, {"loss": np.float32(0.25), "val": float("nan"), "n": np.int64(3), "top": float("inf")})
    text = path.read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "loss": 0.25, "val": "nan", "n": 3, "top": "inf"}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"loss": object()})
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    _write_history(str(tmp_path), [{"epoch": 0, "train_loss": float("nan")}, {"epoch": 1, "train_loss": 0.5}])
    history = read_history(str(tmp_path))
    assert np.isnan(history[0]["train_loss"]) and history[1] == {"epoch": 1, "train_loss": 0.5}


def test_seeds_as_arrays_vmap_and_lbfgs_compiles_once(data):
    """Integer seeds given as arrays (and vmapped seeds) were refused; optax.lbfgs's
    weakly typed counters made the compiled step compile a second time."""
    ds, _ = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    base = create_train_state(model, opt, key=2, batch=ds.train)
    assert _tree_equal(create_train_state(model, opt, key=np.array(2), batch=ds.train), base)
    assert _tree_equal(create_train_state(model, opt, key=jnp.int32(2), batch=ds.train), base)
    ensemble = jax.vmap(lambda s: create_train_state(model, opt, key=s, batch=ds.train))(jnp.arange(3))
    assert _tree_equal(jax.tree.map(lambda a: a[2], ensemble), base)
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*32\)"):
        create_train_state(model, opt, key=np.array(-1), batch=ds.train)
    lbfgs = optax.lbfgs()
    state = create_train_state(model, lbfgs, key=0, batch=ds.train)
    step = make_train_step(model, cross_entropy, lbfgs)
    batch = {k: v[:64] for k, v in ds.train.items()}
    for _ in range(3):
        state, _ = step(state, batch)
    assert step._cache_size() == 1


@pytest.mark.parametrize("loop", ["auto", "scan", "unrolled", "python"])
def test_fused_step_of_zero_steps_returns_the_state(data, loop):
    ds, train = data
    model = get_model("mlp", ds.input_shape, 10, hidden=(4,))
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    after, metrics = make_fused_train_step(model, cross_entropy, opt, loop=loop)(
        state, train, jnp.zeros((0, 8), jnp.int32))
    assert _tree_equal(after, state) and metrics["loss"].shape == (0,)


def test_fused_step_names_an_unknown_loop_when_built():
    model = get_model("mlp", (64,), 10, hidden=(4,))
    with pytest.raises(ValueError, match="unknown loop 'Scan'"):
        make_fused_train_step(model, cross_entropy, optax.sgd(0.1), loop="Scan")


def test_shard_batch_names_a_scalar_entry():
    # IndexError: tuple index out of range
    mesh = data_parallel_mesh()
    with pytest.raises(ValueError, match=r"batch entry \['n'\] is a scalar"):
        shard_batch({"x": np.zeros((8, 2), np.float32), "n": np.float32(3)}, mesh)


# --- from a review of the training loop -------------------------------------------------------


def _tiny_task():
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(40, 4)).astype(np.float32), "y": rng.integers(0, 2, 40).astype(np.int32)}
    return get_model("mlp", (4,), 2, hidden=(3,)), data


@pytest.mark.parametrize("metrics_fn, message", [
    (lambda out, y: {"loss": jnp.float32(0.0)}, "metrics_fn returned 'loss', a name the step reports itself"),
    (lambda out, y: {"correct": (out.argmax(-1) == y).astype(jnp.float32)},
     r"metrics_fn's 'correct' has shape \(20,\); each metric must be a scalar"),
])
def test_metrics_fn_may_not_replace_the_loss_or_return_arrays(metrics_fn, message):
    # A "loss" key replaced the loss that early stopping reads; a per-example array
    # failed after an epoch in fit and gave 512× the accuracy in make_evaluate.
    model, data = _tiny_task()
    with pytest.raises(ValueError, match=message):
        fit(model, cross_entropy, optax.sgd(0.1), data, epochs=1, batch_size=20, metrics_fn=metrics_fn,
            progress=False)


@pytest.mark.parametrize("options, error, message", [
    (dict(steps_per_call=0), ValueError, "steps_per_call"),
    (dict(loop="fast"), ValueError, "unknown loop 'fast'"),
    (dict(metrics_fn=3), TypeError, "metrics_fn must be a function"),
    (dict(drop_last="no"), TypeError, "drop_last must be True or False"),
    (dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*32\)"),
    (dict(seed=1.5), ValueError, "seed must be an integer"),
    (dict(config={"lr": np.float32(0.01)}), TypeError, "config is saved with every checkpoint and must be JSON"),
])
def test_fit_settings_are_checked_before_any_work(tmp_path, options, error, message):
    model, data = _tiny_task()
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        fit(model, cross_entropy, optax.sgd(0.1), data, epochs=2, batch_size=20, out_dir=out, progress=False,
            **options)
    assert not out.exists()  # nothing made: the directory was created, then the run failed


def test_early_stopping_on_validation_loss_without_validation_data_fails_at_the_start():
    from jdl.training import EarlyStopping

    model, data = _tiny_task()
    with pytest.raises(ValueError, match="monitors 'val_loss' but this fit has no validation data"):
        fit(model, cross_entropy, optax.sgd(0.1), data, epochs=3, batch_size=20, progress=False,
            callbacks=[EarlyStopping()])


# --- from a review of the steps and adapters ---------------------------------------------------


def test_steps_name_a_stack_of_states_given_to_an_unbatched_step():
    # An ensemble's stacked state given to the plain step failed inside jax.random.split
    # ("split accepts a single key, but was given a key array of shape (2,)").
    model, data = _tiny_task()
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=data)
    ensemble = jax.tree.map(lambda a: jnp.stack([a, a]), state)  # as jax.vmap(create_train_state) makes
    message = r"step has shape \(2,\): this is a stack of 2 train states"
    with pytest.raises(ValueError, match=message):
        make_train_step(model, cross_entropy, opt)(ensemble, data)
    with pytest.raises(ValueError, match=message):
        make_fused_train_step(model, cross_entropy, opt, loop="scan")(ensemble, data, jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match=message):
        make_evaluate(model, cross_entropy)(ensemble, data)


def test_fused_step_refuses_minibatches_of_no_examples():
    # indices of shape (3, 0) failed in NumPy ("zero-size array to reduction operation").
    model, data = _tiny_task()
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=data)
    with pytest.raises(ValueError, match=r"indices have shape \(3, 0\): 3 steps of 0 examples each"):
        make_fused_train_step(model, cross_entropy, opt)(state, data, jnp.zeros((3, 0), jnp.int32))


def test_default_metrics_leave_a_model_of_several_outputs_to_its_own_loss():
    # A model returning (logits, penalty) for its own loss_fn failed in the default
    # metrics: AttributeError: 'tuple' object has no attribute 'ndim'.
    from jdl.training.step import classification_metrics

    logits, labels = jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0])
    assert classification_metrics((logits, jnp.float32(0.0)), labels) == {}
    np.testing.assert_allclose(classification_metrics(logits, labels)["accuracy"], 0.5)
    # End to end: the state's label check (it read outputs.shape) and a step take such a model.
    data = {"x": jnp.eye(2), "y": labels}
    model = from_function(lambda w, x: (x @ w, 1e-3 * jnp.sum(w**2)), jnp.zeros((2, 2)))

    def loss_fn(outputs, y):
        z, penalty = outputs
        return cross_entropy(z, y) + penalty

    state = create_train_state(model, optax.sgd(0.1), key=0, batch=data)
    state, metrics = make_train_step(model, loss_fn, optax.sgd(0.1))(state, data)
    assert "accuracy" not in metrics and np.isfinite(float(metrics["loss"]))
