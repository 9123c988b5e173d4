"""Datasets shipped with jdl or generated in code, and minibatching."""

from jdl.data.datasets import DATASETS as DATASETS
from jdl.data.datasets import Dataset as Dataset
from jdl.data.datasets import digits as digits
from jdl.data.datasets import load_dataset as load_dataset
from jdl.data.datasets import load_digits_arrays as load_digits_arrays
from jdl.data.datasets import mnist1d as mnist1d
from jdl.data.datasets import mnist1d_arrays as mnist1d_arrays
from jdl.data.datasets import spirals as spirals
from jdl.data.datasets import split_arrays as split_arrays
from jdl.data.datasets import standardize as standardize
from jdl.data.datasets import two_moons as two_moons
from jdl.data.datasets import xor as xor
from jdl.data.loader import batches as batches
from jdl.data.loader import epoch_indices as epoch_indices
from jdl.data.loader import epoch_permutation as epoch_permutation
from jdl.data.loader import num_batches as num_batches

__all__ = [
    "DATASETS",
    "Dataset",
    "batches",
    "digits",
    "epoch_indices",
    "epoch_permutation",
    "load_dataset",
    "load_digits_arrays",
    "mnist1d",
    "mnist1d_arrays",
    "num_batches",
    "spirals",
    "split_arrays",
    "standardize",
    "two_moons",
    "xor",
]
