"""Train on the 8×8 digits three ways with the same pure step.

1. ``fit``: the one-call loop (epochs, validation, history, progress bar).
2. The pure step by hand: ``state, metrics = train_step(state, batch)``.
3. An ensemble: ``jax.vmap`` of the fused step over 8 seeds, one compiled
   program, then the averaged prediction (model averaging, seeds 000/003).

    python examples/train_digits.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdl.data import digits, epoch_indices, standardize
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import (
    Variables,
    create_train_state,
    fit,
    make_evaluate,
    make_fused_train_step,
    make_train_step,
)


def train_by_hand(epochs: int, batch_size: int = 64, hidden=(256, 256)) -> float:
    """The pure step in a Python loop: ``state, metrics = train_step(state, batch)``.

    ``make_train_step`` returns one ``jax.jit``-compiled function of pytrees,
    compiled once and reused for every minibatch. Returns the test accuracy.
    """
    ds = standardize(digits())
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    opt = optax.adam(1e-3)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    train_step = make_train_step(model, cross_entropy, opt)
    train = {k: jnp.asarray(v) for k, v in ds.train.items()}
    n = len(ds.train["y"])
    for epoch in range(epochs):
        full, _ = epoch_indices(jax.random.key(0), epoch, n, batch_size)  # the remainder is dropped
        for idx in full:
            state, metrics = train_step(state, {k: v[idx] for k, v in train.items()})
    return float(make_evaluate(model, cross_entropy)(state, ds.test)["accuracy"])


def train_ensemble(num_members: int, epochs: int, batch_size: int = 64, hidden=(128,)):
    """Train ``num_members`` MLPs from different seeds in one vmapped program.

    Returns the members' test accuracies and the accuracy of their averaged
    softmax prediction.
    """
    ds = standardize(digits())
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    opt = optax.adam(1e-3)
    train = {k: jnp.asarray(v) for k, v in ds.train.items()}
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in range(num_members)])
    states = jax.vmap(lambda k: create_train_state(model, opt, key=k, batch=ds.train))(keys)
    train_steps = make_fused_train_step(model, cross_entropy, opt, jit=False)
    # vmap over the member axis of the state and of the index array: each member sees its own order
    step_all = jax.jit(jax.vmap(train_steps, in_axes=(0, None, 0)))
    n = len(ds.train["y"])
    for epoch in range(epochs):
        idx = jnp.stack([epoch_indices(jax.random.key(s), epoch, n, batch_size)[0] for s in range(num_members)])
        states, _ = step_all(states, train, idx)
    x_test = jnp.asarray(ds.test["x"])
    logits = jax.vmap(lambda s: model.apply(Variables(s.params, s.model_state), x_test, train=False)[0])(states)
    member_acc = np.asarray((jnp.argmax(logits, -1) == ds.test["y"][None, :]).mean(-1))
    mean_prob = jax.nn.softmax(logits, -1).mean(0)
    ensemble_acc = float((jnp.argmax(mean_prob, -1) == ds.test["y"]).mean())
    return member_acc, ensemble_acc


def main(epochs: int = 30, members: int = 8) -> dict:
    ds = standardize(digits())
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(256, 256))
    result = fit(model, cross_entropy, optax.adam(1e-3), ds, epochs=epochs, batch_size=64)
    test = make_evaluate(model, cross_entropy)(result.state, ds.test)
    print(f"fit: {epochs} epochs, test accuracy {100 * test['accuracy']:.2f} %")
    by_hand = train_by_hand(epochs)
    print(f"pure step by hand: {epochs} epochs, test accuracy {100 * by_hand:.2f} %")
    member_acc, ensemble_acc = train_ensemble(members, epochs)
    print(
        f"ensemble of {members} (vmap): members {100 * member_acc.mean():.2f} ± "
        f"{100 * member_acc.std():.2f} %, averaged prediction {100 * ensemble_acc:.2f} %"
    )
    return {
        "fit_test_accuracy": test["accuracy"],
        "by_hand_test_accuracy": by_hand,
        "member_accuracy": member_acc.tolist(),
        "ensemble_accuracy": ensemble_acc,
    }


if __name__ == "__main__":
    from _cli import options

    main(**options(main, __doc__))
