"""Datasets that need no network: shipped with jdl or generated in code.

Every loader returns a :class:`Dataset` with ``train``, ``val`` and ``test``
splits, each a dict ``{"x": float32 array, "y": int32 labels}`` of NumPy arrays,
deterministic for a given seed.
"""

from __future__ import annotations

import gzip
import numbers
from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

import numpy as np

from jdl.validation import check_count


class Dataset(NamedTuple):
    """Train / validation / test splits of one dataset.

    Attributes:
      name: the dataset's name.
      train, val, test: ``{"x": inputs, "y": labels}`` dicts of NumPy arrays.
      num_classes: number of target classes.
    """

    name: str
    train: dict
    val: dict
    test: dict
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train["x"].shape[1:])

    def summary(self) -> str:
        return (
            f"{self.name}: input {self.input_shape}, {self.num_classes} classes, "
            f"{len(self.train['y'])} train / {len(self.val['y'])} val / {len(self.test['y'])} test"
        )


def _as_split(x: np.ndarray, y: np.ndarray) -> dict:
    y = np.asarray(y)
    if y.size and np.issubdtype(y.dtype, np.integer):
        info = np.iinfo(np.int32)
        low, high = int(y.min()), int(y.max())
        if low < info.min or high > info.max:
            raise ValueError(f"class labels must fit in int32 (the labels' dtype from here on), but they range over "
                             f"[{low}, {high}]; map them to 0 … k−1 first (np.unique(y, return_inverse=True)[1])")
    return {"x": np.asarray(x, np.float32), "y": np.asarray(y, np.int32)}


def _is_class_labels(y: np.ndarray) -> bool:
    """Integer (or boolean) labels, one per example: what stratification groups by."""
    return y.ndim == 1 and (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_)


def _apportion(total: int, quotas: np.ndarray, capacity: np.ndarray, tie_order: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, each ``⌊quota⌋`` or one more, and at
    most ``capacity``: the largest-remainder (Hamilton) method, ties broken in
    ``tie_order``. Needs ``total ≤ Σ capacity``."""
    counts = np.minimum(np.floor(quotas).astype(np.int64), capacity)
    order = np.lexsort((tie_order, -(quotas - np.floor(quotas))))  # largest remainder first
    # One pass over ``order`` per round, one more example to each class with
    # room, as vector operations: a Python loop over classes with a sum per
    # class was quadratic (seconds for 10⁵ distinct integer targets, minutes for 10⁶).
    while (short := total - int(counts.sum())) > 0:
        room = order[counts[order] < capacity[order]]
        if not len(room):
            raise AssertionError(f"cannot place {short} more examples: every class is full")
        counts[room[:short]] += 1
    return counts


def _check_seed(seed) -> int:
    """A seed NumPy's ``default_rng`` takes: an integer ``>= 0``. ``None`` is
    refused, not taken as "fresh entropy": every loader is deterministic for its seed."""
    return check_count(seed, "seed", 0, hint="pass a fixed integer such as seed=0, so that the data are reproducible")


def _check_noise(noise) -> float:
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real) or not 0 <= noise < np.inf:
        raise ValueError(f"noise must be a finite number >= 0 (the standard deviation of the added noise), "
                         f"got {noise!r}")
    return float(noise)


def split_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict, dict, dict]:
    """Shuffle once with ``seed`` and cut into train / validation / test.

    The test and validation splits get ``⌊f·N⌋`` of the ``N`` examples for
    their fraction ``f``; training gets the rest (so never none). Integer class
    labels ``y`` (one per example) are split class by class (stratified): each
    class gives each split its share ``f·n_c`` rounded down or up, the
    roundings chosen by largest remainder so the totals stay ``⌊f·N⌋`` —
    rounding each class on its own would drift (ten classes of five with
    ``f = 0.1`` would leave the split empty). Classes are then represented in
    proportion, as far as whole examples allow. They come back as int32. Any
    other targets (real-valued regression targets, soft labels in [0, 1], one
    target vector per example) are split without stratification and keep
    their dtype. Inputs ``x`` come back as float32.

    Raises:
      ValueError: if ``x`` and ``y`` have different numbers of examples (or
        none), the fractions are not in ``[0, 1)`` with a sum below 1, a
        non-zero fraction is less than one example (the split would be
        empty), integer labels do not fit in int32, or ``seed`` is not an
        integer ``>= 0``.
    """
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    for name, f in fractions.items():
        if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a number in [0, 1), got {f!r}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and leave some data for training"
        )
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(
            f"x has shape {x.shape} but y has shape {y.shape}; both need a leading example axis of "
            "the same length (one target per input)"
        )
    seed = _check_seed(seed)
    n = len(y)
    if n == 0:
        raise ValueError("x and y hold 0 examples; there is nothing to split")
    # rounded first, so that 0.29 · 100 = 28.999999999999996 counts as 29
    totals = {name: int(np.floor(np.round(f * n, 9))) for name, f in fractions.items()}
    if sum(totals.values()) >= n:  # only when rounding took val + test to all of a tiny dataset
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} of {n} examples leave "
                         "none for training; lower them")
    for name, f in fractions.items():
        if f > 0 and totals[name] == 0:
            raise ValueError(f"{name}={f} of {n} examples is less than one example, so that split would be "
                             f"empty; use {name}=0 or at least {1 / n:.3g} (one example)")
    rng = np.random.default_rng(seed)
    classes = _is_class_labels(y)
    # stratify on the classes; anything else is a single group of every example
    if classes:  # the indices of each class in increasing order, in O(N log N) (not one y == c per class)
        _, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
        groups = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(sizes)[:-1])
    else:
        groups, sizes = [np.arange(n)], np.array([n])
    # Ties between equal remainders are broken by a generator of their own, so
    # that the shuffles below draw the same numbers whatever the counts are.
    tie_order = np.random.default_rng([seed, 1]).permutation(len(groups))
    n_test = _apportion(totals["test_fraction"], np.round(test_fraction * sizes, 9), sizes, tie_order)
    # Among equal remainders, validation's extra examples go first to classes
    # that gave the test split none (five and five with 10 % each: one of
    # each class, not two of the first).
    test_quotas = np.round(test_fraction * sizes, 9)
    val_ties = np.empty_like(tie_order)
    val_ties[np.lexsort((tie_order, n_test > np.floor(test_quotas)))] = np.arange(len(groups))
    n_val = _apportion(totals["val_fraction"], np.round(val_fraction * sizes, 9), sizes - n_test, val_ties)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for group, t, v in zip(groups, n_test, n_val):
        idx = rng.permutation(group) if len(group) > 1 else group  # one example: no draw either way
        parts["test"].append(idx[:t])
        parts["val"].append(idx[t : t + v])
        parts["train"].append(idx[t + v :])
    out = []
    for name in ("train", "val", "test"):
        idx = rng.permutation(np.concatenate(parts[name]))
        split = _as_split(x[idx], y[idx]) if classes else {"x": np.asarray(x[idx], np.float32), "y": y[idx]}
        out.append(split)
    return tuple(out)


# The generated datasets hold out 10 % for validation: the fewest examples that leaves one.
_MIN_SAMPLES = 10


def xor() -> Dataset:
    """The four XOR points, labels ``x₁ XOR x₂``; all splits are the same four points
    (as copies: changing one split in place leaves the others as they were).

    Not linearly separable: a perceptron cannot fit it, one hidden layer can (seed 001).
    """
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.int32)
    def split():
        return _as_split(x.copy(), y.copy())

    return Dataset("xor", split(), split(), split(), 2)


def two_moons(num_samples: int = 1000, *, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two interleaving half circles in 2-D (as in scikit-learn's ``make_moons``).

    ``num_samples`` points in all (at least 10, so that the 10 % validation
    split holds one), half per class, with Gaussian noise of standard
    deviation ``noise``; split 70 / 10 / 20, stratified.
    """
    num_samples = check_count(num_samples, "num_samples", _MIN_SAMPLES,
                              hint="the 10 % validation split needs at least one point")
    noise, seed = _check_noise(noise), _check_seed(seed)
    rng = np.random.default_rng(seed)
    n0 = num_samples // 2
    n1 = num_samples - n0
    t0 = np.linspace(0, np.pi, n0)
    t1 = np.linspace(0, np.pi, n1)
    x = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1), np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    x = x + noise * rng.standard_normal(x.shape)
    y = np.concatenate([np.zeros(n0), np.ones(n1)]).astype(np.int32)
    return Dataset("two_moons", *split_arrays(x, y, val_fraction=0.1, test_fraction=0.2, seed=seed), 2)


def spirals(num_samples: int = 1500, *, num_classes: int = 3, noise: float = 0.2, seed: int = 0) -> Dataset:
    """``num_classes`` interleaved spiral arms in 2-D (the CS231n toy problem).

    ``num_samples`` points in all: ``num_samples // num_classes`` per arm, the
    remainder one each to the first arms; at least one per arm and at least
    10 in all, so that the 10 % validation split holds one. Split 70 / 10 /
    20, stratified.
    """
    num_classes = check_count(num_classes, "num_classes")
    num_samples = check_count(num_samples, "num_samples", max(num_classes, _MIN_SAMPLES),
                              hint=f"at least one point per arm ({num_classes} arms) and {_MIN_SAMPLES} in all "
                                   "(the 10 % validation split needs one)")
    noise, seed = _check_noise(noise), _check_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        per = num_samples // num_classes + (c < num_samples % num_classes)
        r = np.linspace(0.0, 1.0, per)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, per) + noise * rng.standard_normal(per)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(per, c))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Dataset("spirals", *split_arrays(x, y, val_fraction=0.1, test_fraction=0.2, seed=seed), num_classes)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1 797 8×8 handwritten digits (UCI ML hand-written digits, test set of
    Alpaydin & Kaynak, CC BY 4.0; the copy scikit-learn ships), pixels in 0…16."""
    with resources.files("jdl.data").joinpath("digits.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.float32)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int32)


def digits(*, flatten: bool = True, seed: int = 0) -> Dataset:
    """8×8 digits, scaled to [0, 1]; 20 % test, 10 % validation, stratified.

    Args:
      flatten: inputs as 64-vectors (for MLPs) or ``(8, 8, 1)`` images (for CNNs).
      seed: the seed of the split.
    """
    seed = _check_seed(seed)
    images, labels = load_digits_arrays()
    x = images / 16.0
    x = x.reshape(len(x), 64) if flatten else x[..., None]
    return Dataset("digits", *split_arrays(x, labels, val_fraction=0.1, test_fraction=0.2, seed=seed), 10)


# --- MNIST-1D ---------------------------------------------------------------------


def _mnist1d_templates() -> np.ndarray:
    """The ten 12-point digit templates of MNIST-1D (Greydanus 2020)."""
    d = np.array(
        [
            [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
            [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
            [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
            [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
            [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
            [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
            [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
            [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
        ],
        np.float64,
    )
    d = d - d.mean(1, keepdims=True)
    d = d / d.std(1, keepdims=True)
    d = d - d[:, :1]
    return d / 6.0


def _interpolate(x: np.ndarray, n: int) -> np.ndarray:
    """Resample each row of ``x`` to ``n`` points by linear interpolation."""
    old = np.linspace(0, 1, x.shape[-1])
    new = np.linspace(0, 1, n)
    return np.stack([np.interp(new, old, row) for row in x])


def _gaussian_filter(x: np.ndarray, sigma: float = 2.0, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d(x, sigma)`` (mode "reflect") without SciPy."""
    radius = int(truncate * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(x, radius, mode="symmetric"), kernel, mode="valid")


def mnist1d_arrays(
    num_samples: int = 5000,
    *,
    length: int = 40,
    seed: int = 42,
    template_length: int = 12,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D procedurally (Greydanus, 2020, "Scaling down deep learning").

    Step for step as the reference ``transform.py``: take one of ten 12-point
    templates, append ``p ~ U{36..60}`` zeros, resample to 72 points, scale the
    amplitude by ``1 + scale_coeff·(u − ½)``, roll by ``k ~ U{0..47}``, fill the
    zero (padding) region with Gaussian-filtered noise (σ = 2 points), add
    i.i.d. noise, subtract a shear ``shear_scale·(u − ½)·linspace(−½, ½)``, and
    resample to ``length``. The random draws differ from the reference's, so the
    arrays are not bit-identical to the published dataset, but the task is the
    same (logistic regression ≈ 30 %, an MLP ≈ 60 %, a 1-D CNN ≈ 90 %).

    Raises:
      ValueError: for a count that is not a positive integer, padding that is
        not ``0 <= low <= high``, or a seed that is not an integer ``>= 0``.
    """
    num_samples = check_count(num_samples, "num_samples")
    length = check_count(length, "length")
    template_length = check_count(template_length, "template_length")
    max_translation = check_count(max_translation, "max_translation",
                                  hint="the shift is drawn from 0 … max_translation − 1")
    seed = _check_seed(seed)
    try:
        low, high = (check_count(p, "padding", 0) for p in padding)
    except (TypeError, ValueError):
        low = high = -1
    if not 0 <= low <= high:
        raise ValueError(f"padding must be a pair of integers (low, high) with 0 <= low <= high, got {padding!r}")
    rng = np.random.default_rng(seed)
    templates = _mnist1d_templates()
    y = np.arange(num_samples) % 10
    rng.shuffle(y)
    base_len = template_length + padding[1]
    xs = np.empty((num_samples, length))
    for i, label in enumerate(y):
        pad = padding[0] + int(rng.random() * (padding[1] - padding[0] + 1))
        x = np.concatenate([templates[label] + 1e-8, np.zeros(pad)])
        x = _interpolate(x[None], base_len)[0]
        x = x * (1 + scale_coeff * (rng.random() - 0.5))
        x = np.roll(x, int(rng.integers(max_translation)))
        noise = _gaussian_filter(corr_noise_scale * rng.standard_normal(base_len))
        x = np.where(x != 0, x, noise)
        x = x + iid_noise_scale * rng.standard_normal(base_len)
        x = x - shear_scale * (rng.random() - 0.5) * np.linspace(-0.5, 0.5, base_len)
        xs[i] = _interpolate(x[None], length)[0]
    return xs.astype(np.float32), y.astype(np.int32)


def mnist1d(*, seed: int = 42, val_fraction: float = 0.1) -> Dataset:
    """MNIST-1D: 4 000 train (of which ``val_fraction`` held out for validation)
    and 1 000 test sequences of length 40, 10 classes, as ``(N, 40)`` arrays.

    The validation split holds ``round(val_fraction · 4000)`` sequences: none
    for ``val_fraction=0``, else at least one, and at least one is left for
    training.
    """
    if (isinstance(val_fraction, (bool, np.bool_)) or not isinstance(val_fraction, numbers.Real)
            or not 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1) (of the 4 000 training sequences), got {val_fraction!r}")
    n_val = int(round(val_fraction * 4000))
    if val_fraction > 0 and n_val == 0:
        raise ValueError(f"val_fraction={val_fraction} of the 4 000 training sequences is less than one, so the "
                         "validation split would be empty; use val_fraction=0 or at least 0.00025 (one sequence)")
    if n_val == 4000:
        raise ValueError(f"val_fraction={val_fraction} of the 4 000 training sequences leaves none for training; "
                         "use at most 0.99975 (3 999 sequences)")
    seed = _check_seed(seed)
    x, y = mnist1d_arrays(5000, seed=seed)
    rng = np.random.default_rng(seed + 1)
    idx = rng.permutation(len(y))
    train_idx, test_idx = idx[:4000], idx[4000:]
    return Dataset(
        "mnist1d",
        _as_split(x[train_idx[n_val:]], y[train_idx[n_val:]]),
        _as_split(x[train_idx[:n_val]], y[train_idx[:n_val]]),
        _as_split(x[test_idx], y[test_idx]),
        10,
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "xor": xor,
    "two_moons": two_moons,
    "spirals": spirals,
    "digits": digits,
    "mnist1d": mnist1d,
}


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name: one of ``DATASETS``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
    return loader(**kwargs)


def standardize(dataset: Dataset, *, eps: float = 0.1) -> Dataset:
    """Standardise every input feature with the training split's statistics.

    ``x ← (x − μ_train) / (σ_train + ε)``, applied to all three splits. The ε
    keeps features that never vary in training (the blank border pixels of the
    digits) finite; with ``eps=0`` such features are only centred (their
    scale is taken as 1, as scikit-learn's ``StandardScaler`` does), rather
    than divided by zero into NaN and ±inf. Centred, equally scaled inputs
    make the loss surface better conditioned (seed 004 §3.1.1: input
    normalisation as preconditioning).

    Raises:
      ValueError: if ``eps`` is negative or not finite, or the training split
        is empty (it has no statistics).
    """
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) or not 0 <= eps < np.inf:
        raise ValueError(f"eps must be a finite number >= 0 (added to each feature's standard deviation), "
                         f"got {eps!r}")
    x = dataset.train["x"]
    if not len(x):
        raise ValueError(f"the training split of {dataset.name!r} is empty: it has no statistics to "
                         "standardise with")
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    if eps == 0:
        std = np.where(std == 0, 1.0, std)

    def apply(split: dict) -> dict:
        return {**split, "x": ((split["x"] - mean) / (std + eps)).astype(np.float32)}

    return dataset._replace(train=apply(dataset.train), val=apply(dataset.val), test=apply(dataset.test))
