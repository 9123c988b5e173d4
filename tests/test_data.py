"""Datasets without network, and minibatching."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.data import (
    DATASETS,
    Dataset,
    batches,
    digits,
    epoch_indices,
    epoch_permutation,
    load_dataset,
    mnist1d,
    num_batches,
    spirals,
    split_arrays,
    standardize,
    two_moons,
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
    # the splits hold the same points but not the same arrays: one changed in place leaves the others
    ds.train["x"] *= 2
    np.testing.assert_array_equal(ds.test["x"], [[0, 0], [0, 1], [1, 0], [1, 1]])


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


def test_split_arrays_sizes_are_the_fractions_of_all_examples_even_for_small_classes():
    # Rounding each class on its own drifted: ten classes of five at 10 % gave
    # empty validation and test splits, 30 % of 5 + 5 gave 2 / 4 / 4, and
    # integer targets with one example per value gave 100 / 0 / 0.
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.array([0] * 5 + [1] * 5)
    for f, sizes in ((0.1, [8, 1, 1]), (0.3, [4, 3, 3])):
        train, val, test = split_arrays(x, y, val_fraction=f, test_fraction=f, seed=0)
        assert [len(s["y"]) for s in (train, val, test)] == sizes
        ids = np.concatenate([s["x"][:, 0] for s in (train, val, test)]).astype(int)
        assert sorted(ids.tolist()) == list(range(10))
        # per class each split gets its share rounded down or up, and training keeps both classes evenly
        for s in (train, val, test):
            counts = np.bincount(s["y"], minlength=2)
            assert np.all(np.abs(counts - len(s["y"]) / 2) <= 1)
    train, val, test = split_arrays(np.arange(100.0)[:, None], np.arange(100), val_fraction=0.1,
                                    test_fraction=0.2, seed=0)
    assert [len(s["y"]) for s in (train, val, test)] == [70, 10, 20]
    assert test["y"].max() > 50  # ties are broken at random, not by the lowest values
    # the total is floor(f · N) after rounding away float error (0.29 · 100 = 28.999…)
    sizes = [len(s["y"]) for s in split_arrays(np.zeros((100, 1)), np.arange(100.0), val_fraction=0.1,
                                                test_fraction=0.29, seed=0)]
    assert sizes == [61, 10, 29]
    # large uneven classes: each split's class counts are within one of their share
    labels = np.repeat(np.arange(7), [3, 11, 40, 7, 1, 23, 15])
    train, val, test = split_arrays(np.zeros((100, 1)), labels, val_fraction=0.15, test_fraction=0.25, seed=3)
    assert [len(s["y"]) for s in (train, val, test)] == [60, 15, 25]
    share = np.bincount(labels) / 100
    for s, f in ((val, 0.15), (test, 0.25)):
        assert np.all(np.abs(np.bincount(s["y"], minlength=7) - f * 100 * share) < 1)


def test_split_arrays_refuses_a_split_of_less_than_one_example_and_labels_beyond_int32():
    x = np.zeros((5, 1))
    with pytest.raises(ValueError, match=r"val_fraction=0.1 of 5 examples is less than one example"):
        split_arrays(x, np.arange(5) % 2, val_fraction=0.1, test_fraction=0.2, seed=0)
    train, val, test = split_arrays(x, np.arange(5) % 2, val_fraction=0, test_fraction=0.2, seed=0)
    assert [len(s["y"]) for s in (train, val, test)] == [4, 0, 1]
    with pytest.raises(ValueError, match="fit in int32"):  # 2**33 wrapped to 0, merging two classes
        split_arrays(np.zeros((4, 1)), np.array([0, 2**33, 0, 2**33]), val_fraction=0, test_fraction=0, seed=0)
    with pytest.raises(ValueError, match="must be a number"):
        split_arrays(x, np.arange(5), val_fraction=None, test_fraction=0, seed=0)
    with pytest.raises(ValueError, match="leave none for training"):  # 5 + 5 of 10 after rounding
        split_arrays(np.zeros((10, 1)), np.arange(10) % 2, val_fraction=0.4999999999999, test_fraction=0.5, seed=0)


def test_mnist1d_refuses_a_validation_fraction_outside_0_1():
    for bad in (-0.1, 1.5, 1.0):
        with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
            mnist1d(val_fraction=bad)


def test_spirals_has_num_samples_points_and_refuses_fewer_than_one_per_arm():
    ds = spirals(1000)
    assert sum(len(s["y"]) for s in (ds.train, ds.val, ds.test)) == 1000
    # at least one point per arm, and 10 in all so that the 10 % validation split holds one
    for num_samples, num_classes, minimum in ((2, 3, 10), (9, 3, 10), (11, 12, 12)):
        with pytest.raises(ValueError, match=f"num_samples must be an integer >= {minimum}"):
            spirals(num_samples, num_classes=num_classes)


def test_batches_refuse_empty_data_and_a_bad_epoch_by_name():
    empty = {"x": np.zeros((0, 2), np.float32), "y": np.zeros((0,), np.int32)}
    with pytest.raises(ValueError, match="0 examples"):
        list(batches(empty, 4, key=0))
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "y": np.arange(10, dtype=np.int32)}
    for bad in (1.5, -1, True):
        with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
            list(batches(data, 4, key=0, epoch=bad))
    assert [b["y"].tolist() for b in batches(data, 4, key=0, epoch=np.int64(2))] == \
        [b["y"].tolist() for b in batches(data, 4, key=0, epoch=2)]


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


def test_epoch_indices_and_permutation_take_an_int_seed_like_batches():
    # an int seed used to fail deep inside jax.random ("invalid PRNG key data")
    full, rest = epoch_indices(3, 1, 10, 4)
    full_k, rest_k = epoch_indices(jax.random.key(3), 1, 10, 4)
    np.testing.assert_array_equal(full, full_k)
    np.testing.assert_array_equal(rest, rest_k)
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "y": np.arange(10, dtype=np.int32)}
    order = [b["y"].tolist() for b in batches(data, 4, key=3, epoch=1)]
    assert order == [*np.asarray(full).tolist(), np.asarray(rest).tolist()]
    np.testing.assert_array_equal(epoch_permutation(3, 1, 10), np.concatenate([np.ravel(full), rest]))
    with pytest.raises(TypeError, match="key must be an integer seed or a PRNG key, got None"):
        epoch_indices(None, 0, 10, 4)
    np.testing.assert_array_equal(epoch_indices(None, 0, 10, 4, shuffle=False)[0], [[0, 1, 2, 3], [4, 5, 6, 7]])
    for bad in (10.0, -5):  # used to fail inside jax.random.permutation, or say "larger than the -5"
        with pytest.raises(ValueError, match="num_examples must be an integer >= 0"):
            epoch_indices(jax.random.key(0), 0, bad, 4)


def test_a_negative_or_too_large_numpy_epoch_is_refused_not_wrapped():
    # np.int64(-1) was folded in as 2**32 - 1: a silent, different shuffle
    key = jax.random.key(0)
    for bad in (np.int64(-1), jnp.int32(-1), 2**32, np.uint64(2**32)):
        with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
            epoch_permutation(key, bad, 10)
    # a traced epoch still works, and agrees with the concrete one
    traced = jax.jit(lambda e: epoch_permutation(key, e, 10))(jnp.int32(3))
    np.testing.assert_array_equal(traced, epoch_permutation(key, 3, 10))


def test_batches_check_their_arguments_at_the_call_not_at_the_first_batch():
    data = {"x": np.zeros((10, 2), np.float32), "y": np.zeros(10, np.int32)}
    with pytest.raises(ValueError, match="larger than the 10"):
        batches(data, 11)  # no list(): the error comes from the call itself
    with pytest.raises(ValueError, match="different lengths"):
        batches({"x": data["x"], "y": data["y"][:9]}, 2)
    with pytest.raises(TypeError, match="key must be"):
        batches(data, 2, key="abc")
    device = {k: jnp.asarray(v) for k, v in data.items()}  # device arrays: NumPy batches, as for NumPy data
    assert all(isinstance(b["x"], np.ndarray) for b in batches(device, 4, key=0))


def test_generated_datasets_refuse_bad_sizes_noise_and_seeds_by_name():
    # two_moons(5) used to blame a val_fraction the caller never passed; seed=None
    # failed inside NumPy ("NoneType has no len()"); noise=nan gave NaN inputs
    for bad in (5, 0, -10, 1.5):
        with pytest.raises(ValueError, match="num_samples must be an integer >= 10"):
            two_moons(bad)
    assert sum(len(s["y"]) for s in two_moons(10)[1:4]) == 10
    for bad in (float("nan"), -0.1, float("inf")):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            two_moons(noise=bad)
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            spirals(noise=bad)
    x, y = np.zeros((10, 1)), np.arange(10) % 2
    for bad in (None, -1, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            split_arrays(x, y, val_fraction=0.1, test_fraction=0.1, seed=bad)
        for loader in (two_moons, spirals, digits, mnist1d):
            with pytest.raises(ValueError, match="seed must be an integer >= 0"):
                loader(seed=bad)
    with pytest.raises(ValueError, match="0 examples"):
        split_arrays(np.zeros((0, 1)), np.zeros(0, np.int32), val_fraction=0, test_fraction=0, seed=0)


def test_mnist1d_never_leaves_a_split_empty_and_checks_its_generator_arguments():
    from jdl.data import mnist1d_arrays

    # 0.99999 · 4000 rounds to 4000: training used to come back with 0 sequences
    with pytest.raises(ValueError, match="leaves none for training"):
        mnist1d(val_fraction=0.99999)
    with pytest.raises(ValueError, match="less than one"):
        mnist1d(val_fraction=1e-5)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        mnist1d(val_fraction="0.1")  # used to be a TypeError from a comparison
    for kwargs, name in (({"max_translation": 0}, "max_translation"), ({"num_samples": 2.5}, "num_samples"),
                         ({"length": 0}, "length"), ({"padding": (60, 36)}, "padding")):
        with pytest.raises(ValueError, match=name):
            mnist1d_arrays(**kwargs)


def test_standardize_matches_a_reference_and_keeps_constant_features_finite_with_eps_zero():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(50, 3)).astype(np.float32)
    train[:, 2] = 0.0  # never varies in training, like the digits' border pixels
    test = rng.normal(size=(7, 3)).astype(np.float32)
    split = lambda x: {"x": x, "y": np.zeros(len(x), np.int32)}  # noqa: E731
    ds = Dataset("toy", split(train), split(test[:2]), split(test), 1)
    mu, sigma = train.astype(np.float64).mean(0), train.astype(np.float64).std(0)
    got = standardize(ds, eps=0.1)
    np.testing.assert_allclose(got.test["x"], (test - mu) / (sigma + 0.1), rtol=1e-6)  # training statistics only
    # eps=0: (x - μ) / 0 used to give NaN in training and ±inf in test
    got = standardize(ds, eps=0)
    assert all(np.isfinite(s["x"]).all() for s in (got.train, got.val, got.test))
    np.testing.assert_allclose(got.test["x"][:, :2], (test[:, :2] - mu[:2]) / sigma[:2], rtol=1e-5)
    np.testing.assert_array_equal(got.test["x"][:, 2], test[:, 2])  # only centred (its mean is 0)
    for bad in (-0.1, float("nan"), None):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            standardize(ds, eps=bad)


def test_split_arrays_with_one_class_per_example_keeps_every_example_with_its_label():
    # Grouping by class is one sort (it was one `y == c` per class, quadratic in the number of
    # distinct integer targets: ~5 s for 1.5·10⁵). How long it takes is for a benchmark to say;
    # this checks the grouping is right when every target is its own class.
    n = 20_000
    train, val, test = split_arrays(np.arange(n, dtype=np.float32)[:, None], np.arange(n), val_fraction=0.1,
                                    test_fraction=0.2, seed=0)
    assert [len(s["y"]) for s in (train, val, test)] == [14_000, 2_000, 4_000]
    ids = np.concatenate([s["x"][:, 0] for s in (train, val, test)]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    for s in (train, val, test):
        np.testing.assert_array_equal(s["y"], s["x"][:, 0].astype(int))
