"""Datasets without network, and minibatching."""

import jax
import numpy as np
import pytest

from jdl.data import (
    DATASETS,
    batches,
    digits,
    epoch_indices,
    load_dataset,
    mnist1d,
    num_batches,
    split_arrays,
    standardize,
    xor,
)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_loads_with_sane_splits(name):
    ds = load_dataset(name)
    for split in (ds.train, ds.val, ds.test):
        assert split["x"].dtype == np.float32 and split["y"].dtype == np.int32
        assert len(split["x"]) == len(split["y"]) > 0
        assert np.isfinite(split["x"]).all()
        assert split["y"].min() >= 0 and split["y"].max() < ds.num_classes
    assert set(np.unique(ds.train["y"])) == set(range(ds.num_classes))


def test_digits_is_the_1797_image_set():
    ds = digits()
    assert sum(len(s["y"]) for s in (ds.train, ds.val, ds.test)) == 1797
    assert ds.input_shape == (64,)
    assert 0.0 <= ds.train["x"].min() and ds.train["x"].max() <= 1.0
    images = digits(flatten=False)
    assert images.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(images.train["x"].reshape(-1, 64), ds.train["x"])
    # stratified: every class in the small validation split
    assert len(np.unique(ds.val["y"])) == 10


def test_mnist1d_sizes_and_determinism():
    ds = mnist1d()
    assert len(ds.train["y"]) + len(ds.val["y"]) == 4000 and len(ds.test["y"]) == 1000
    assert ds.input_shape == (40,) and ds.num_classes == 10
    again = mnist1d()
    np.testing.assert_array_equal(ds.train["x"], again.train["x"])
    other = mnist1d(seed=7)
    assert not np.array_equal(ds.train["x"], other.train["x"])
    counts = np.bincount(np.concatenate([ds.train["y"], ds.val["y"], ds.test["y"]]))
    np.testing.assert_array_equal(counts, np.full(10, 500))


def test_xor_is_not_linearly_separable_by_construction():
    ds = xor()
    np.testing.assert_array_equal(ds.train["y"], [0, 1, 1, 0])


def test_standardize_uses_training_statistics():
    ds = standardize(digits())
    x = ds.train["x"]
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    assert ds.test["x"].dtype == np.float32


def test_epochs_reshuffle_deterministically_and_cover_every_example():
    key = jax.random.key(0)
    full0, rest0 = epoch_indices(key, 0, 100, 16)
    full0b, _ = epoch_indices(key, 0, 100, 16)
    full1, _ = epoch_indices(key, 1, 100, 16)
    np.testing.assert_array_equal(full0, full0b)
    assert not np.array_equal(full0, full1)
    assert full0.shape == (6, 16) and rest0.shape == (4,)
    assert sorted(np.concatenate([np.ravel(full0), rest0]).tolist()) == list(range(100))


@pytest.mark.parametrize("batch_size,drop_last,expected", [(1, False, 10), (4, False, 3), (4, True, 2), (10, True, 1)])
def test_batches_sgd_minibatch_and_full_batch(batch_size, drop_last, expected):
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "y": np.arange(10, dtype=np.int32)}
    got = list(batches(data, batch_size, key=jax.random.key(1), drop_last=drop_last))
    assert len(got) == expected == num_batches(10, batch_size, drop_last=drop_last)
    seen = np.concatenate([b["y"] for b in got])
    assert len(set(seen.tolist())) == len(seen)
    for b in got:
        np.testing.assert_array_equal(b["x"][:, 0], b["y"])


def test_bad_batch_sizes_and_names_are_rejected():
    data = {"x": np.zeros((10, 2), np.float32), "y": np.zeros(10, np.int32)}
    with pytest.raises(ValueError, match="positive integer"):
        list(batches(data, 0))
    with pytest.raises(ValueError, match="larger than the 10"):
        list(batches(data, 11))
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*digits"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="missing"):
        list(batches({"x": data["x"]}, 2))


def test_split_arrays_keeps_real_valued_targets_and_stratifies_only_class_labels():
    rng = np.random.default_rng(0)
    x = np.arange(1000, dtype=np.float32)[:, None]
    y = rng.standard_normal(1000)  # regression targets: each value used to be a "class" of one
    splits = split_arrays(x, y, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert [len(s["y"]) for s in splits] == [700, 100, 200]
    ids = np.concatenate([s["x"][:, 0] for s in splits]).astype(int)
    assert sorted(ids.tolist()) == list(range(1000))
    for s in splits:  # targets stay with their inputs, values and dtype unchanged
        assert s["y"].dtype == np.float64 and s["x"].dtype == np.float32
        np.testing.assert_array_equal(s["y"], y[s["x"][:, 0].astype(int)])
    soft = rng.uniform(size=1000).astype(np.float32)  # soft labels in [0, 1] were truncated to 0
    train, _, _ = split_arrays(x, soft, val_fraction=0.1, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(train["y"], soft[train["x"][:, 0].astype(int)])
    # integer labels: stratified as before, int32
    labels = np.arange(1000) % 4
    train, val, test = split_arrays(x, labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert train["y"].dtype == np.int32
    np.testing.assert_array_equal(np.bincount(val["y"]), [25] * 4)
    np.testing.assert_array_equal(np.bincount(test["y"]), [50] * 4)
    with pytest.raises(ValueError, match=r"x has shape \(10, 1\) but y has shape \(1000,\)"):
        split_arrays(x[:10], labels, val_fraction=0.1, test_fraction=0.2, seed=0)


def test_batches_take_an_int_seed_or_refuse_a_bad_key_clearly():
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "y": np.arange(10, dtype=np.int32)}
    by_seed = [b["y"].tolist() for b in batches(data, 4, key=3, epoch=1)]
    assert by_seed == [b["y"].tolist() for b in batches(data, 4, key=jax.random.key(3), epoch=1)]
    raw = jax.random.key_data(jax.random.key(3))
    assert by_seed == [b["y"].tolist() for b in batches(data, 4, key=raw, epoch=1)]
    with pytest.raises(TypeError, match="key must be an integer seed or a PRNG key"):
        list(batches(data, 4, key=1.5))


def test_num_batches_agrees_with_batches_and_refuses_what_batches_refuses():
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "y": np.arange(10, dtype=np.int32)}
    with pytest.raises(ValueError, match="positive integer"):
        num_batches(10, 0, drop_last=False)
    for batch_size in (11, 16):  # batches refuses these; num_batches used to answer 1
        with pytest.raises(ValueError, match="larger than the 10"):
            num_batches(10, batch_size, drop_last=False)
        with pytest.raises(ValueError, match="larger than the 10"):
            list(batches(data, batch_size))
