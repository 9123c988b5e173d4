"""Checkpoint and resume: bit-identical resume, determinism, atomic writes, clear failures."""

import os

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jdl.data import digits
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import Checkpointer, create_train_state, fit


@pytest.fixture(scope="module")
def ds():
    return digits()


def _model(ds, hidden=(16,)):
    # dropout makes every step depend on the per-step key: resume must restore it exactly
    return get_model("mlp", ds.input_shape, 10, hidden=hidden, dropout_rate=0.2)


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


RUN = dict(batch_size=100, seed=3)


def test_interrupted_run_resumes_bit_identical(ds, tmp_path):
    opt = optax.adam(1e-2)
    straight = fit(_model(ds), cross_entropy, opt, ds, epochs=4, **RUN)
    # the same run, stopped after 2 epochs and resumed from its checkpoint in a new call
    fit(_model(ds), cross_entropy, opt, ds, epochs=2, out_dir=tmp_path, **RUN)
    resumed = fit(_model(ds), cross_entropy, opt, ds, epochs=4, out_dir=tmp_path, resume=True, **RUN)
    assert _equal(resumed.state, straight.state)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 4


def test_resume_refuses_a_checkpoint_of_another_model_with_the_same_tree(ds, tmp_path):
    # Only the tree spec was compared: a tanh MLP resumed a relu MLP's run silently.
    fit(_model(ds), cross_entropy, optax.adam(1e-2), ds, epochs=1, out_dir=tmp_path, **RUN)
    other = get_model("mlp", ds.input_shape, 10, hidden=(16,), dropout_rate=0.2)
    other = other._replace(name="mlp-tanh")
    files = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="is of the model 'mlp', but this fit's model is 'mlp-tanh'"):
        fit(other, cross_entropy, optax.adam(1e-2), ds, epochs=2, out_dir=tmp_path, resume=True, **RUN)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    resumed = fit(_model(ds), cross_entropy, optax.adam(1e-2), ds, epochs=2, out_dir=tmp_path, resume=True, **RUN)
    assert len(resumed.history) == 2


def test_metrics_are_written_after_the_epochs_checkpoint(ds, tmp_path, monkeypatch):
    # metrics.jsonl was written before the checkpoint: a save that failed (an
    # interrupt) left a record of an epoch no checkpoint held.
    save = Checkpointer.save

    def failing_save(self, epoch, *args, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return save(self, epoch, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(ds), cross_entropy, optax.adam(1e-2), ds, epochs=3, out_dir=tmp_path, **RUN)
    lines = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 1


def test_early_stopping_resumes_exactly_and_stays_stopped(ds, tmp_path):
    """EarlyStopping's best state used to be lost on resume (the resumed run
    returned the last state, not the best), a run that had stopped trained on
    when resumed, the checkpoint held a state fit did not return, and a reused
    instance carried its counters into the next fit."""
    from jdl.training import EarlyStopping

    opt = optax.sgd(0.5)

    def stopper(patience):  # min_delta so large that epoch 0 stays the best
        return EarlyStopping("val_loss", min_delta=10.0, patience=patience)

    # Never stops within 5 epochs; interrupted after 2 and resumed: same best state.
    straight = fit(_model(ds), cross_entropy, opt, ds, epochs=5, callbacks=[stopper(100)], **RUN)
    steps_per_epoch = int(straight.history[0]["step"])
    assert int(straight.state.step) == steps_per_epoch  # the state of epoch 0
    fit(_model(ds), cross_entropy, opt, ds, epochs=2, callbacks=[stopper(100)], out_dir=tmp_path / "a", **RUN)
    resumed = fit(_model(ds), cross_entropy, opt, ds, epochs=5, callbacks=[stopper(100)],
                  out_dir=tmp_path / "a", resume=True, **RUN)
    assert _equal(resumed.state, straight.state)
    # The final checkpoint keeps the training state (to extend the run) and the returned one.
    with Checkpointer(tmp_path / "a" / "checkpoints") as ckpt:
        last, meta = ckpt.restore(resumed.state)
        assert int(last.step) == 5 * steps_per_epoch and meta["stopped"] is False
        assert _equal(ckpt.restore_extra(resumed.state, "final"), straight.state)
    # Stops after epoch 2; resuming the finished run trains nothing and returns the same.
    first = fit(_model(ds), cross_entropy, opt, ds, epochs=10, callbacks=[stopper(2)], out_dir=tmp_path / "b", **RUN)
    again = fit(_model(ds), cross_entropy, opt, ds, epochs=10, callbacks=[stopper(2)], out_dir=tmp_path / "b",
                resume=True, **RUN)
    assert len(first.history) == len(again.history) == 3
    assert _equal(again.state, first.state) and _equal(first.state, straight.state)
    # One instance, two fits: the second starts afresh.
    shared = stopper(2)
    runs = [fit(_model(ds), cross_entropy, opt, ds, epochs=10, callbacks=[shared], **RUN) for _ in range(2)]
    assert [len(r.history) for r in runs] == [3, 3]


def test_same_seed_same_result_other_seed_differs(ds):
    opt = optax.sgd(0.1)
    a = fit(_model(ds), cross_entropy, opt, ds, epochs=1, batch_size=100, seed=0)
    b = fit(_model(ds), cross_entropy, opt, ds, epochs=1, batch_size=100, seed=0)
    c = fit(_model(ds), cross_entropy, opt, ds, epochs=1, batch_size=100, seed=1)
    assert _equal(a.state, b.state)
    assert not _equal(a.state.params, c.state.params)


def _state(ds, hidden=(16,)):
    return create_train_state(_model(ds, hidden), optax.adam(1e-3), key=0, batch=ds.train)


def test_crash_mid_write_keeps_the_last_good_checkpoint(ds, tmp_path, monkeypatch):
    good = _state(ds)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, good, {"history": []})

    def crash(*args, **kwargs):
        raise OSError("simulated crash while writing")

    # the state is written first, then the JSON metadata: fail in between
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "save", crash)
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "async_save", crash)
    newer = good.replace(step=good.step + 1)
    with pytest.raises(OSError, match="simulated crash"):
        with Checkpointer(tmp_path) as ckpt:
            ckpt.save(1, newer, {"history": []})
    monkeypatch.undo()
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_epoch() == 0
        restored, _ = ckpt.restore(_state(ds))
    assert _equal(restored, good)


def test_mismatched_checkpoint_names_the_difference(ds, tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, _state(ds, hidden=(16,)), {"history": [], "config": {"hidden": [16]}})
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"does not match.*\(16,\).*\(32,\)|does not match.*32"):
            ckpt.restore(_state(ds, hidden=(32,)))


def test_corrupt_checkpoint_gives_a_clear_error_and_is_not_touched(ds, tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, _state(ds), {"history": []})
    meta_dir = tmp_path / "0" / "meta"
    files = [p for p in meta_dir.rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="corrupt"):
            ckpt.restore(_state(ds))
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after


def test_fit_refuses_to_overwrite_an_existing_run(ds, tmp_path):
    opt = optax.sgd(0.1)
    fit(_model(ds), cross_entropy, opt, ds, epochs=1, out_dir=tmp_path, **RUN)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="resume"):
        fit(_model(ds), cross_entropy, opt, ds, epochs=1, out_dir=tmp_path, **RUN)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after
    assert os.path.isdir(tmp_path / "checkpoints" / "0")


def test_python_scalar_leaves_are_saved_and_compared(tmp_path):
    """A Python int or float leaf (a count some optimizer states keep) had no
    ``.dtype``, so saving any state holding one raised AttributeError."""
    tree = {"w": np.ones(3, np.float32), "count": 3, "rate": 0.5}
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(0, tree, {})
        restored, _ = ck.restore(tree)
        assert restored["count"] == 3 and restored["rate"] == 0.5 and np.array_equal(restored["w"], tree["w"])
        with pytest.raises(ValueError, match=r"\['count'\] is int32\(\) in the checkpoint but float32\(\) now"):
            ck.restore(dict(tree, count=3.0))


def test_resume_matches_callback_states_by_type_and_occurrence(ds, tmp_path):
    """Callback states were restored by position: callbacks passed in another
    order took each other's counters, and then (matched by position and type)
    a stateless callback added in front was refused although the message said
    it may be added."""
    from jdl.training import Callback, EarlyStopping

    class Quiet(Callback):  # no state: may be added, left out or moved on resume
        pass

    opt = optax.sgd(0.5)
    fit(_model(ds), cross_entropy, opt, ds, epochs=1, out_dir=tmp_path / "a",
        callbacks=[EarlyStopping(patience=50), Quiet()], **RUN)
    with Checkpointer(tmp_path / "a" / "checkpoints") as ckpt:
        saved = ckpt.read_meta()["callbacks"][0]
    with pytest.raises(ValueError, match=r"callback 0 \(jdl.training.callbacks.EarlyStopping, number 1 of its "
                                         r"type\) kept state .* have 0 of that type"):
        fit(_model(ds), cross_entropy, opt, ds, epochs=2, out_dir=tmp_path / "a", resume=True,
            callbacks=[Quiet()], **RUN)
    stopper = EarlyStopping(patience=50)
    seen = []

    class Spy(Callback):
        def on_fit_start(self, ctx, state):
            seen.append((stopper.best, stopper.best_epoch))

    resumed = fit(_model(ds), cross_entropy, opt, ds, epochs=2, out_dir=tmp_path / "a", resume=True,
                  callbacks=[Quiet(), stopper, Spy()], **RUN)
    assert seen == [(saved["best"], saved["best_epoch"])]  # the state reached the moved EarlyStopping
    assert stopper.best_epoch in (0, 1) and len(resumed.history) == 2


def test_a_failed_resume_leaves_nothing_to_the_next_run(ds, tmp_path):
    """A resume that failed after restoring callback state left EarlyStopping
    marked as resumed: the next, unrelated run stopped on the old run's numbers
    and returned its best parameters."""
    from jdl.training import EarlyStopping

    stopper = EarlyStopping(patience=1, restore_best=True)
    fit(_model(ds), cross_entropy, optax.sgd(0.5), ds, epochs=2, out_dir=tmp_path / "a", callbacks=[stopper], **RUN)
    with pytest.raises(ValueError, match="steps_per_call"):  # checked before anything is restored now
        fit(_model(ds), cross_entropy, optax.sgd(0.5), ds, epochs=3, out_dir=tmp_path / "a", resume=True,
            callbacks=[stopper], steps_per_call=0, **RUN)
    fresh = fit(_model(ds), cross_entropy, optax.sgd(1e-4), ds, epochs=2, callbacks=[stopper], **RUN)
    assert [r["epoch"] for r in fresh.history] == [0, 1] and stopper.best_epoch in (0, 1)
    assert stopper.best == min(r["val_loss"] for r in fresh.history)


def test_damaged_state_arrays_give_a_short_message_that_names_the_other_epochs(ds, tmp_path):
    """With the arrays' store damaged, the message carried kilobytes of
    TensorStore specification and advised only deleting the checkpoint."""
    with Checkpointer(tmp_path) as ckpt:
        for epoch in (0, 1):
            ckpt.save(epoch, _state(ds), {"history": []})
    for p in (tmp_path / "1" / "state").rglob("*"):
        if p.is_file() and p.name != "_METADATA":
            p.write_bytes(b"")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError) as error:
            ckpt.restore(_state(ds), 1)
    message = str(error.value)
    assert "corrupt" in message and "epochs [0]" in message and "--epoch 0" in message
    assert len(message) < 700, message


def _tiny(value=0.0, n=3, dtype=np.float32):
    return {"w": np.full((n,), value, dtype), "step": np.zeros((), np.int32)}


def test_save_never_replaces_or_prunes_for_an_older_epoch(tmp_path):
    # Saving epoch 3 after 4 and 5 (max_to_keep=2) deleted epoch 4, and "latest" became 3.
    with Checkpointer(tmp_path, max_to_keep=2) as c:
        c.save(4, _tiny(4.0), {})
        c.save(5, _tiny(5.0), {})
        for epoch in (3, 5):
            with pytest.raises(ValueError, match=f"cannot save epoch {epoch}.*newest checkpoint there is epoch 5"):
                c.save(epoch, _tiny(), {})
        assert c.all_epochs() == [4, 5]
        assert c.restore(_tiny(), 4)[0]["w"][0] == 4.0


@pytest.mark.parametrize("epoch", [1.5, True, -1, "2"])
def test_save_refuses_an_epoch_that_is_not_a_count(tmp_path, epoch):
    # 1.5 and True were written as directories '1.5' and 'True' that no later reading found.
    with Checkpointer(tmp_path) as c:
        with pytest.raises((TypeError, ValueError), match="epoch"):
            c.save(epoch, _tiny(), {})
        c.save(np.int64(2), _tiny(), {})  # a NumPy integer is an integer (it was a JSON error after the write)
        assert c.all_epochs() == [2]
    assert sorted(os.listdir(tmp_path)) == ["2"]


@pytest.mark.parametrize("max_to_keep", [0, -1, 2.5, True])
def test_max_to_keep_must_be_a_positive_count(tmp_path, max_to_keep):
    # max_to_keep=0 deleted every checkpoint, the one just saved included.
    with pytest.raises(ValueError, match="max_to_keep must be an integer ≥ 1"):
        Checkpointer(tmp_path, max_to_keep=max_to_keep)


def test_max_to_keep_none_keeps_all(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=None) as c:
        for epoch in range(4):
            c.save(epoch, _tiny(), {})
        assert c.all_epochs() == [0, 1, 2, 3]


def test_bad_metadata_or_empty_arrays_are_refused_before_anything_is_written(tmp_path):
    # Metadata that is not JSON failed after the arrays were written, leaving a
    # temporary directory that blocked the retry.
    with Checkpointer(tmp_path) as c:
        with pytest.raises(TypeError, match="metadata must be JSON"):
            c.save(0, _tiny(), {"loss": np.float32(0.5)})
        with pytest.raises(ValueError, match=r"state\['z'\] is an empty array"):
            c.save(0, dict(_tiny(), z=np.zeros((0,), np.float32)), {})
        assert not os.path.exists(tmp_path) or os.listdir(tmp_path) == []
        c.save(0, _tiny(), {"loss": 0.5})
        assert c.read_meta(0)["loss"] == 0.5


def test_extra_states_must_match_the_state(tmp_path):
    # An extra state of another dtype was saved, then silently rounded into the template's.
    with Checkpointer(tmp_path) as c:
        with pytest.raises(ValueError, match="extra state 'best' does not have the structure"):
            c.save(0, _tiny(), {}, extra_states={"best": _tiny(dtype=np.float16)})
        c.save(0, _tiny(), {}, extra_states={"best": _tiny(1 / 3)})
        with pytest.raises(ValueError, match=r"extra state 'best'.*does not match.*\['w'\] is float32\(3,\) in the "
                                             r"checkpoint but float16\(3,\) now"):
            c.restore_extra(_tiny(dtype=np.float16), "best")
        assert c.restore_extra(_tiny(), "best")["w"][0] == np.float32(1 / 3)


def test_opening_to_read_creates_nothing_and_a_file_is_refused(tmp_path):
    missing = tmp_path / "missing" / "sub"
    c = Checkpointer(missing)
    assert c.latest_epoch() is None and c.all_epochs() == []
    c.close()
    assert not (tmp_path / "missing").exists()
    target = tmp_path / "afile"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        Checkpointer(target)
    assert target.read_text() == "keep me"


def test_resume_refuses_other_minibatching_or_another_training_set_size(ds, tmp_path):
    # A changed batch size resumed silently: steps went 7, 14, 16, 18 and the shuffling no longer continued.
    fit(_model(ds), cross_entropy, optax.adam(1e-2), ds, epochs=1, out_dir=tmp_path, **RUN)
    with pytest.raises(ValueError, match=r"other data settings \(batch_size 100 then, 50 now\)"):
        fit(_model(ds), cross_entropy, optax.adam(1e-2), ds, epochs=2, out_dir=tmp_path, resume=True,
            **dict(RUN, batch_size=50))
    fewer = {k: v[:1000] for k, v in ds.train.items()}
    with pytest.raises(ValueError, match=r"num_examples .* then, 1000 now"):
        fit(_model(ds), cross_entropy, optax.adam(1e-2), fewer, val_data=ds.val, epochs=2, out_dir=tmp_path,
            resume=True, **RUN)
