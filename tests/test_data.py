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
