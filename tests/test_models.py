"""Every registered architecture initialises, runs forward and backward under jit with the
expected output shape; model-specific behaviour against references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jdl.nn as jnn
from jdl.models import (
    CNN,
    MLP,
    MODELS,
    VAE,
    Discriminator,
    Generator,
    LinearAutoencoder,
    Perceptron,
    RecurrentClassifier,
    SmallCNN,
    TiedAutoencoder,
    TransformerEncoder,
    bind,
    build_module,
    generate,
    get_model,
    init_gan,
    make_gan_step,
    model_entry,
    model_options,
    register_model,
    vae_loss,
)
from jdl.training import Variables, from_nnx_factory

NUM_CLASSES = 3
BATCH = 2
SHAPES = {"vector": (64,), "image": (8, 8, 1), "sequence": (12,)}
CLI = {"hidden": (4,), "dropout_rate": 0.0}  # the CLI's options, passed to the builders that take them
# tiny widths: compile time, not arithmetic, dominates these tests
TINY = {
    "cnn": {"channels": (4,), "dense_width": 4},
    "cnn1d": {"channels": (4, 4, 4), "dense_width": 4},
    "resnet": {"stages": (4,)},
    "resnet1d": {"stages": (4, 8)},  # a second stage: stride 2 and the 1×1 projection shortcut
    "transformer": {"width": 8, "num_heads": 2, "num_layers": 1},
    "linear_autoencoder": {"latent": 2},
    "tied_autoencoder": {"latent": 2},
    "denoising_autoencoder": {"latent": 2},
    "vae": {"latent": 2},
}
CNN_TINY = {"channels": (4, 4), "dense_width": 4}

# (name, input shape, options): every registry entry with its own input kind, plus a
# sequence model on images read row by row (what the CLI feeds it for the digits).
# Stochastic pooling in 1-D is tested in test_nn.py.


def _options(name: str) -> dict:
    """The tiny widths, plus the CLI options the model takes (``hidden`` sets a
    CNN's dense width, so it replaces ``dense_width`` there)."""
    taken = set(model_options(name))
    options = dict(TINY.get(name, CNN_TINY if name.startswith("cnn_") else {}))
    options.update({k: v for k, v in CLI.items() if k in taken})
    if "hidden" in options:
        options.pop("dense_width", None)
    return {k: v for k, v in options.items() if k in taken}


CONFIGS = [(name, SHAPES[entry.input_kind], _options(name)) for name, entry in MODELS.items()] + [
    ("gru", (8, 8, 1), _options("gru")),
]


def _keydata(i):
    return jax.random.key_data(jax.random.key(i))


def _output_shape(name, input_shape):
    return (BATCH, *input_shape) if model_entry(name).task == "reconstruction" else (BATCH, NUM_CLASSES)


def test_every_builder_takes_the_cli_options_and_every_entry_is_tested():
    assert {name for name, _, _ in CONFIGS} == set(MODELS)
    for entry in MODELS.values():
        assert entry.input_kind in ("vector", "image", "sequence")
        assert entry.task in ("classification", "reconstruction")
        assert entry.description


@pytest.mark.parametrize(
    "name,input_shape,options", CONFIGS, ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}" for c in CONFIGS]
)
def test_forward_and_backward_under_jit(name, input_shape, options):
    model = get_model(name, input_shape, NUM_CLASSES, **options)
    x = jnp.asarray(np.random.default_rng(0).random((BATCH, *input_shape)), jnp.float32)
    variables = model.init(_keydata(0), x)

    @jax.jit
    def loss_and_grad(params, x, key):
        def loss(p):
            out, state = model.apply(Variables(p, variables.model_state), x, train=True, key=key)
            return sum(jnp.sum(o**2) for o in jax.tree.leaves(out)), (out, state)

        return jax.value_and_grad(loss, has_aux=True)(params)

    (value, (out, _)), grads = loss_and_grad(variables.params, x, _keydata(1))
    # evaluation mode: same output structure (traced, not compiled, to save test time)
    evaluated, _ = jax.eval_shape(
        lambda p: model.apply(Variables(p, variables.model_state), x, train=False, key=None), variables.params
    )
    head = out.logits if name == "vae" else out
    assert head.shape == _output_shape(name, input_shape)
    assert jax.tree.map(jnp.shape, evaluated) == jax.tree.map(jnp.shape, out)
    assert np.isfinite(float(value))
    assert jax.tree.structure(grads) == jax.tree.structure(variables.params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


def test_registry_errors_and_registration():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("alexnet", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="input_kind"):
        register_model("bad", lambda *a, **k: None, "graph", "no")
    with pytest.raises(ValueError, match="square"):
        get_model("cnn", (8, 6, 1), 10)
    with pytest.raises(ValueError, match="shrinks to nothing"):
        CNN(1, 10, input_size=(2, 2), channels=(2,), padding="VALID", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="asymmetric"):
        CNN(1, 10, input_size=(12,), conv="asymmetric", rngs=nnx.Rngs(0))


def test_kept_constructor_signatures():
    mlp = MLP(64, (8,), 10, activation=nnx.relu, dropout_rate=0.5, batch_norm=True, rngs=nnx.Rngs(0))
    assert len(mlp.dropouts) == 1 and abs(mlp.dropouts[0].rate - 0.5) < 1e-12 and mlp.input_dropout is None
    cnn = SmallCNN(1, 10, channels=(4,), hidden=8, image_size=8, rngs=nnx.Rngs(0))
    assert cnn(jnp.ones((2, 8, 8, 1))).shape == (2, 10)


def test_mlp_dropout_defaults_are_the_seed_keep_probabilities():
    mlp = MLP(10, (8, 8), 2, dropout=True, rngs=nnx.Rngs(0))
    assert abs(mlp.input_dropout.rate - 0.2) < 1e-12
    assert [round(d.rate, 12) for d in mlp.dropouts] == [0.5, 0.5]
    residual = MLP(10, (8, 8, 4), 2, residual=True, rngs=nnx.Rngs(0))
    assert residual.skips == (False, True, False)
    # the residual connection really adds the input: h₂ = h₁ + f(W₂ h₁ + b₂)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 10)), jnp.float32)
    h1 = nnx.relu(residual.layers[0](x))
    h2 = h1 + nnx.relu(residual.layers[1](h1))
    h3 = nnx.relu(residual.layers[2](h2))
    np.testing.assert_allclose(residual.features(x), h3, rtol=1e-6)


def test_perceptron_predicts_the_sign_of_its_net_input():
    p = Perceptron(2, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(50, 2)), jnp.float32)
    net = p.linear(x)[:, 0]
    np.testing.assert_array_equal(p.predict(x), np.where(np.asarray(net) > 0, 1.0, -1.0))
    np.testing.assert_array_equal(jnp.argmax(p(x), axis=-1), (np.asarray(net) > 0).astype(int))
    multi = Perceptron(2, 4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(multi.predict(x), jnp.argmax(multi(x), axis=-1))


def test_recurrent_classifier_readouts_match_a_manual_loop():
    model = RecurrentClassifier(2, 3, cell="gru", hidden=(5,), bidirectional=True, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 6, 2)), jnp.float32)

    @nnx.jit
    def manual(model, x):
        fwd, bwd = model.layers[0].forward_rnn.cell, model.layers[0].backward_rnn.cell
        hf, hb = jnp.zeros((4, 5)), jnp.zeros((4, 5))
        for t in range(6):  # a plain Python loop, unrolled: the reference for the scan
            hf, _ = fwd(hf, x[:, t])
            hb, _ = bwd(hb, x[:, 5 - t])
        return model.head(jnp.concatenate([hf, hb], axis=-1)), model(x)  # forward's last, backward's first

    expected, got = manual(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_linear_and_tied_autoencoders():
    lin = LinearAutoencoder(6, 2, rngs=nnx.Rngs(0))
    assert lin.decoder_basis().shape == (6, 2)
    tied = TiedAutoencoder(6, 2, rngs=nnx.Rngs(0))
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(tied, nnx.Param)))
    assert count == 6 * 2 + 2 + 6  # one shared matrix, two biases
    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 6)), jnp.float32)
    w = np.asarray(tied.encoder.kernel[...])
    code = np.asarray(x) @ w + np.asarray(tied.encoder.bias[...])
    np.testing.assert_allclose(tied(x), code @ w.T, rtol=1e-5, atol=1e-6)


def test_denoising_autoencoder_corrupts_only_in_training():
    model = get_model("denoising_autoencoder", (6,), 0, hidden=(4,), latent=2, noise_level=0.5)
    x = jnp.ones((2, 6))
    v = model.init(_keydata(0), x)
    module = bind(build_module("denoising_autoencoder", (6,), 0, hidden=(4,), latent=2, noise_level=0.5), v)
    clean = module.decode(module.encode(x))
    np.testing.assert_allclose(model.apply(v, x, train=False, key=None)[0], clean, rtol=1e-6)
    noisy, _ = model.apply(v, x, train=True, key=_keydata(1))
    assert not np.allclose(noisy, clean)


def test_vae_loss_reparameterisation_and_sampling():
    model = from_nnx_factory(lambda rngs: VAE(6, 2, (4,), rngs=rngs))
    x = jnp.asarray(np.random.default_rng(4).random((3, 6)), jnp.float32)
    v = model.init(_keydata(0), x)
    out, _ = model.apply(v, x, train=False, key=None)
    module = bind(VAE(6, 2, (4,), rngs=nnx.Rngs(0)), v)
    mean, log_var = module.encode(x)
    np.testing.assert_allclose(out.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(out.logits, module.decode(mean), rtol=1e-6)  # eval: z = μ
    expected = jnn.binary_cross_entropy(out.logits, x) + jnn.kl_divergence_standard_normal(mean, log_var)
    np.testing.assert_allclose(vae_loss(out, x), expected, rtol=1e-6)
    a, _ = model.apply(v, x, train=True, key=_keydata(1))
    b, _ = model.apply(v, x, train=True, key=_keydata(1))
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.allclose(a.logits, out.logits)  # training samples z
    assert module.sample(jax.random.key(0), 5).shape == (5, 6)


def test_bind_reproduces_apply():
    model = get_model("mlp", (5,), 2, hidden=(4,), batch_norm=True)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 5)), jnp.float32)
    v = model.init(_keydata(3), x)
    _, state = model.apply(v, x, train=True, key=None)
    trained = Variables(v.params, state)
    module = bind(build_module("mlp", (5,), 2, hidden=(4,), batch_norm=True), trained)
    np.testing.assert_allclose(module(x), model.apply(trained, x, train=False, key=None)[0], rtol=1e-6)


def test_gan_step_is_pure_deterministic_and_updates_both_players():
    gen = from_nnx_factory(lambda rngs: Generator(3, 2, (8,), rngs=rngs))
    disc = from_nnx_factory(lambda rngs: Discriminator(2, (8,), rngs=rngs))
    g_opt, d_opt = optax.adam(1e-2), optax.adam(1e-2)
    real = jnp.asarray(np.random.default_rng(6).normal(size=(16, 2)), jnp.float32)
    state = init_gan(gen, disc, g_opt, d_opt, latent_features=3, sample=real, key=0)
    step = make_gan_step(gen, disc, g_opt, d_opt, latent_features=3)
    s1, m1 = step(state, real)
    s2, m2 = step(state, real)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)))
    assert int(s1.step) == 1 and 0 < float(m1["d_real"]) < 1 and 0 < float(m1["d_fake"]) < 1
    for player in ("generator", "discriminator"):
        before, after = getattr(state, player).params, getattr(s1, player).params
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))

    # the discriminator's update is Adam on the discriminator loss of this step's batch
    def d_loss(p):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
        z_d, _, g1, _, d_real_key, d_fake_key, _ = jax.random.split(key, 7)
        fake, _ = gen.apply(state.generator, jax.random.normal(z_d, (16, 3)), train=True, key=jax.random.key_data(g1))
        r, _ = disc.apply(
            Variables(p, state.discriminator.model_state), real, train=True, key=jax.random.key_data(d_real_key)
        )
        f, _ = disc.apply(
            Variables(p, state.discriminator.model_state), fake, train=True, key=jax.random.key_data(d_fake_key)
        )
        return jnn.discriminator_loss(r, f)

    @jax.jit
    def reference(params):
        updates, _ = d_opt.update(jax.grad(d_loss)(params), d_opt.init(params))
        return d_loss(params), optax.apply_updates(params, updates)

    loss, expected = reference(state.discriminator.params)
    np.testing.assert_allclose(m1["d_loss"], loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(s1.discriminator.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert generate(gen, s1, jax.random.key(1), 7, latent_features=3).shape == (7, 2)


def test_transformer_is_permutation_equivariant_without_position_embeddings():
    model = build_module("transformer", (6, 2), 3, width=8, num_heads=2, num_layers=1)
    model.eval()
    model.positions[...] = jnp.zeros_like(model.positions[...])
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 6, 2)), jnp.float32)
    perm = np.array([3, 0, 5, 1, 4, 2])

    @nnx.jit
    def run(model, x):
        return model(x), model.tokens(x), model(x[:, perm]), model.tokens(x[:, perm])

    out, tokens, out_perm, tokens_perm = run(model, x)
    np.testing.assert_allclose(tokens_perm, tokens[:, perm], rtol=1e-5, atol=1e-6)  # tokens move with the input
    np.testing.assert_allclose(out, out_perm, rtol=1e-5, atol=1e-6)  # their mean does not


def test_models_train_state_vmaps_over_keys():
    model = get_model("lstm", (5,), 2, hidden=(3,))
    x = jnp.ones((2, 5))
    stacked = jax.jit(jax.vmap(lambda k: model.init(k, x)))(jax.vmap(_keydata)(jnp.arange(3)))
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(stacked.params))
    cell = stacked.params["layers"][0]["cell"]
    kernel = cell["dense_i"]["kernel"][...]
    assert not np.array_equal(kernel[0], kernel[1])  # each key its own initialisation
    np.testing.assert_array_equal(cell["dense_h"]["bias"][...][:, 3:6], 1.0)  # forget-gate bias 1 in every member


# --- float64: what `jdl hessian --float64` runs (params and data cast to float64) -------------

FLOAT64_MODELS = {
    "rnn": {"hidden": (4,)},
    "lstm": {"hidden": (4,)},
    "gru": {"hidden": (4,)},
    "bilstm": {"hidden": (4,)},
    "bigru": {"hidden": (4,)},
    "transformer": {"width": 8, "num_heads": 2, "num_layers": 1},
}


def _to_float64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _float32_lines(jaxpr):
    """Lines of a jaxpr's text (sub-jaxprs of scans and custom derivatives included) with a float32 value."""
    return [line.strip() for line in str(jaxpr).splitlines() if "f32" in line]


@pytest.mark.parametrize("name", list(FLOAT64_MODELS))
def test_sequence_models_compute_in_float64_with_float64_params_and_inputs(name):
    """The recurrent layers start their state in the computation dtype (not the cells'
    float32 param_dtype, which scan rejected), the plain RNN cell has no fixed float32
    dtype, and attention's softmax is not done in float32: no float32 anywhere in the
    loss, its gradient or a Hessian-vector product."""
    model = get_model(name, (12,), NUM_CLASSES, **FLOAT64_MODELS[name])
    variables = model.init(_keydata(0), jnp.ones((BATCH, 12), jnp.float32))  # float32, as trained
    with jax.enable_x64(True):
        v64 = _to_float64(variables)
        x = jnp.asarray(np.random.default_rng(8).normal(size=(BATCH, 12)), jnp.float64)

        def forward(params):
            return model.apply(Variables(params, v64.model_state), x, train=False, key=None)[0]

        def loss(params):
            return jnp.sum(forward(params) ** 2)

        out = jax.eval_shape(forward, v64.params)
        assert out.shape == (BATCH, NUM_CLASSES) and out.dtype == jnp.float64
        hvp = jax.make_jaxpr(lambda p, t: jax.jvp(jax.grad(loss), (p,), (t,)))(v64.params, v64.params)
        assert all(v.aval.dtype == jnp.float64 for v in hvp.jaxpr.outvars)
        assert not _float32_lines(hvp), "\n".join(_float32_lines(hvp)[:5])


def test_plain_rnn_in_float64_matches_a_numpy_float64_loop():
    model = get_model("rnn", (12,), NUM_CLASSES, hidden=(5,))
    variables = model.init(_keydata(1), jnp.ones((BATCH, 12), jnp.float32))
    x = np.random.default_rng(9).normal(size=(3, 12))
    with jax.enable_x64(True):
        v64 = _to_float64(variables)
        out, _ = model.apply(v64, jnp.asarray(x), train=False, key=None)
    assert out.dtype == jnp.float64
    params = jax.tree.map(np.asarray, v64.params)
    cell = params["layers"][0]["cell"]
    w_i, b, w_h = cell["dense_i"]["kernel"], cell["dense_i"]["bias"], cell["dense_h"]["kernel"]
    h = np.zeros((3, 5))
    for t in range(12):  # h' = tanh(W_i x_t + b + W_h h), in numpy float64
        h = np.tanh(x[:, t : t + 1] @ w_i + b + h @ w_h)
    expected = h @ params["head"]["kernel"] + params["head"]["bias"]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-12)  # float32 steps: ~1e-7


def test_transformer_attention_keeps_the_input_dtype_and_matches_flax_in_float32():
    from jdl.models.transformer import dot_product_attention as attention_fn

    rng = np.random.default_rng(10)
    q, k, v = (rng.normal(size=(2, 5, 3, 4)) for _ in range(3))  # [batch, length, heads, depth]
    mask = np.tril(np.ones((5, 5), bool))[None, None]  # causal, broadcast over batch and heads
    expected_f32 = nnx.dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), mask=jnp.asarray(mask))
    got_f32 = attention_fn(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), mask=jnp.asarray(mask))
    assert got_f32.dtype == jnp.float32
    np.testing.assert_allclose(got_f32, expected_f32, rtol=1e-5, atol=1e-6)
    # float64 against numpy: softmax(q·k/√d, masked) v per head
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(4.0)
    logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    expected = np.einsum("bhqk,bkhd->bqhd", weights, v)
    with jax.enable_x64(True):
        got = attention_fn(*(jnp.asarray(a) for a in (q, k, v)), mask=jnp.asarray(mask))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-12)
    # with attention dropout, in training: still no float32 anywhere
    model = get_model("transformer", (12,), NUM_CLASSES, width=8, num_heads=2, num_layers=1, dropout_rate=0.3)
    variables = model.init(_keydata(2), jnp.ones((BATCH, 12), jnp.float32))
    with jax.enable_x64(True):
        v64 = _to_float64(variables)
        x = jnp.ones((BATCH, 12), jnp.float64)
        train = jax.make_jaxpr(lambda p: model.apply(Variables(p, v64.model_state), x, train=True, key=_keydata(3)))
        assert not _float32_lines(train(v64.params))


def test_init_gan_takes_every_kind_of_key():
    # A NumPy integer seed or a typed key raised TypeError ("invalid PRNG key data").
    gen = from_nnx_factory(lambda rngs: Generator(3, 2, (8,), rngs=rngs))
    disc = from_nnx_factory(lambda rngs: Discriminator(2, (8,), rngs=rngs))
    real = jnp.zeros((4, 2), jnp.float32)
    states = [init_gan(gen, disc, optax.sgd(0.1), optax.sgd(0.1), latent_features=3, sample=real, key=key)
              for key in (0, np.int64(0), jax.random.key(0), jax.random.PRNGKey(0))]
    for other in states[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(states[0].generator),
                                                        jax.tree.leaves(other.generator)))


def test_transformer_parameters_are_float32_under_x64():
    # The position embedding followed the default float: float64 under x64, which
    # promoted the whole forward pass of a float32 model to float64.
    with jax.enable_x64(True):
        model = get_model("transformer", (16,), 3)
        x = jnp.zeros((2, 16), jnp.float32)
        v = model.init(_keydata(0), x)
        assert {a.dtype for a in jax.tree.leaves(v.params)} == {jnp.dtype(jnp.float32)}
        assert model.apply(v, x, train=False, key=None)[0].dtype == jnp.float32


def test_from_nnx_init_is_a_snapshot_of_the_module():
    # init returned the module's live variables: an eager training call on the
    # module moved the BatchNorm running mean that init reported.
    from jdl.models.resnet import ResNet
    from jdl.training import from_nnx

    net = ResNet(3, 5, stages=(4, 8), rngs=nnx.Rngs(0))
    model = from_nnx(net)
    before = model.init(None, None)
    net(jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32))
    after = model.init(None, None)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert float(jnp.max(jnp.abs(after.model_state["stem_norm"]["mean"]))) == 0.0


# --- configuration and inputs are checked at the boundary -----------------------------------


def test_mlp_keep_probabilities_need_dropout_and_conflict_with_dropout_rate():
    # hidden_keep_prob without dropout=True was silently ignored (no dropout at all), and
    # dropout=True with dropout_rate silently dropped the input dropout.
    with pytest.raises(ValueError, match="only applies with dropout=True"):
        MLP(4, (8,), 2, hidden_keep_prob=0.7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="give one"):
        MLP(4, (8,), 2, dropout=True, dropout_rate=0.3, rngs=nnx.Rngs(0))
    mlp = nnx.eval_shape(
        lambda: MLP(4, (8,), 2, dropout=True, input_keep_prob=0.9, hidden_keep_prob=0.7, rngs=nnx.Rngs(0))
    )
    assert abs(mlp.input_dropout.rate - 0.1) < 1e-12 and abs(mlp.dropouts[0].rate - 0.3) < 1e-12
    with pytest.raises(ValueError, match="hidden_keep_prob must be in"):
        MLP(4, (8,), 2, dropout=True, hidden_keep_prob=0.0, rngs=nnx.Rngs(0))


def test_cnn_convolutions_before_batch_norm_have_no_bias():
    # The bias of a convolution followed by BatchNorm cancels with the batch mean: it only
    # added exactly flat directions (zero Hessian eigenvalues), as the MLP and ResNet avoid.
    def output_bias(conv):  # the bias of the stage that feeds BatchNorm
        return getattr(conv, "pointwise", getattr(conv, "column", conv)).bias

    for kind in ("standard", "separable", "asymmetric"):
        with_bn = nnx.eval_shape(lambda kind=kind: CNN(1, 3, input_size=(8, 8), channels=(2, 2), conv=kind,
                                                       batch_norm=True, rngs=nnx.Rngs(0)))
        assert all(output_bias(conv) is None for conv in with_bn.convs), kind
        plain = nnx.eval_shape(lambda kind=kind: CNN(1, 3, input_size=(8, 8), channels=(2, 2), conv=kind,
                                                     rngs=nnx.Rngs(0)))
        assert all(output_bias(conv) is not None for conv in plain.convs), kind


def test_models_name_the_input_shape_they_were_built_for():
    # A mismatched batch was a dot_general / conv_general_dilated shape error from inside XLA.
    # (Abstract modules: the check runs before any parameter is used.)
    def make(cls, *args, **kwargs):
        return nnx.eval_shape(lambda: cls(*args, **kwargs, rngs=nnx.Rngs(0)))

    cases = [
        (make(MLP, 6, (4,), 3), (2, 7), r"MLP was built for examples of 6 features.*\(2, 7\)"),
        (make(MLP, 6, (4,), 3), (6,), r"lacks the batch axis: pass x\[None\]"),
        (make(VAE, 6, 2, (4,)), (2, 3, 3), r"VAE was built for examples of 6 features"),
        (make(SmallCNN, 1, 3, channels=(2,), hidden=4), (2, 8, 8, 3), r"built for 1 input channel"),
        (make(SmallCNN, 1, 3, channels=(2,), hidden=4), (2, 10, 10, 1), r"image_size=10"),
        (make(CNN, 1, 3, input_size=(8, 8), channels=(2,)), (2, 6, 6, 1), r"spatial size \(8, 8\).*head='global'"),
        (make(RecurrentClassifier, 2, 3, cell="gru", hidden=(3,)), (2, 5, 3), r"2 feature\(s\) per time step"),
        (make(TransformerEncoder, 2, 3, max_length=6, width=8, num_heads=2, num_layers=1), (2, 6, 3), r"2 feature"),
    ]
    for model, shape, message in cases:
        with pytest.raises(ValueError, match=message):
            model(jnp.ones(shape))
    def out_shape(model, shape):
        return nnx.eval_shape(lambda m: m(jnp.ones(shape)), model).shape

    global_head = make(CNN, 1, 3, input_size=(8, 8), channels=(2,), head="global")
    assert out_shape(global_head, (1, 6, 6, 1)) == (1, 3)  # a global-pooling head takes any size
    assert out_shape(make(MLP, 1, (), 1), (5,)) == (5, 1)  # (N,): N examples of one feature
