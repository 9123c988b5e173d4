"""Runs on disk: a configuration, the objects it builds, and a run directory.

A run directory (what ``jdl train`` writes) holds::

    config.json            the RunConfig, so the run can be rebuilt and resumed
    checkpoints/<epoch>/   Orbax checkpoints of the TrainState (latest two)
    metrics.jsonl          one JSON record per epoch
    learning_curve.png     loss and accuracy per epoch
    summary.json           final train / validation / test metrics

:func:`load_run` rebuilds the model, dataset and train state from such a
directory, for analysis (``jdl hessian``) or to continue training.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import numpy as np
import optax

from jdl._io import read_non_finite
from jdl._io import write_json_atomic as write_json_atomic
from jdl.data import Dataset, load_dataset, standardize
from jdl.models import get_model, model_entry
from jdl.models.registry import model_options
from jdl.nn import cross_entropy
from jdl.optim import get_optimizer
from jdl.training.checkpoint import Checkpointer
from jdl.training.fit import CHECKPOINT_DIR, METRICS_FILE
from jdl.training.model import Model
from jdl.training.state import TrainState, check_seed, create_train_state
from jdl.validation import check_count, check_positive_float, check_positive_int

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (the CLI's options).

    Attributes:
      dataset: a name from :data:`jdl.data.DATASETS`.
      model: a name from :data:`jdl.models.MODELS`.
      hidden: hidden widths (``None``: the model's default); a model without hidden
        widths refuses them.
      dropout: dropout rate (``0``: none, which every model has); a model without
        dropout layers refuses a positive rate.
      optimizer: a jdl or Optax optimizer name.
      learning_rate: peak learning rate η.
      schedule: ``"constant"`` or ``"cosine"`` (η·½(1 + cos(π t/T)) over the run).
      batch_size: minibatch size.
      epochs: epochs to train.
      seed: seeds initialisation, shuffling and dropout.
      standardize: standardise input features with training statistics.
    """

    dataset: str = "digits"
    model: str = "mlp"
    hidden: tuple[int, ...] | None = None
    dropout: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    batch_size: int = 64
    epochs: int = 40
    seed: int = 0
    standardize: bool = True

    def validate(self) -> RunConfig:
        """Check every field, raising one clear error for the first bad one."""
        check_positive_int(self.batch_size, "batch size", hint="e.g. --batch-size 64")
        check_positive_float(self.learning_rate, "learning rate", hint="e.g. --lr 1e-3")
        check_seed(self.seed, "seed")
        check_count(self.epochs, "epochs", 0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.hidden is not None and (
            isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (list, tuple)) or not self.hidden
            or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in self.hidden)):
            raise ValueError(f"hidden widths must be positive integers, got {self.hidden!r}")
        from jdl.data import DATASETS

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASETS)}")
        entry = model_entry(self.model)  # raises for an unknown name
        if entry.task != "classification":
            raise ValueError(
                f"model {self.model!r} is a {entry.task} model, and `jdl train` trains classifiers; "
                f"choose one of {classifier_names()}, or see examples/ for training {self.model}"
            )
        check_model_takes(self.model, [name for name, value in model_settings(self).items() if value is not None])
        get_optimizer(self.optimizer, self.learning_rate)  # raises for an unknown name
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"hidden": None if self.hidden is None else list(self.hidden)}

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"config has unknown fields {sorted(unknown)}")
        d = dict(d)
        if d.get("hidden") is not None:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


# RunConfig fields that set a model option: field -> (registry option, CLI flag)
MODEL_FIELDS = {"hidden": ("hidden", "--hidden"), "dropout": ("dropout_rate", "--dropout")}


def model_settings(config: RunConfig) -> dict[str, Any]:
    """The RunConfig fields that set a model option, ``None`` where the model's default
    stands: no ``hidden`` given, and dropout ``0`` (no dropout: every model's default)."""
    return {"hidden": config.hidden, "dropout": config.dropout or None}


def check_model_takes(model: str, fields) -> None:
    """Raise a ``ValueError`` if ``model`` does not take the option that each RunConfig field
    in ``fields`` (``"hidden"``, ``"dropout"``) sets, naming the classifiers that do."""
    accepted = model_options(model)
    if accepted is None:  # a registered builder that checks its own options
        return
    for field in fields:
        option, flag = MODEL_FIELDS[field]
        if option not in accepted:
            raise ValueError(
                f"model {model!r} does not take {flag} (it has no {option!r} option); "
                f"the models that take {flag}: {', '.join(models_taking(field))}"
            )


def models_taking(field: str) -> list[str]:
    """The classifiers that take the option a RunConfig field (``"hidden"``, ``"dropout"``) sets."""
    option = MODEL_FIELDS[field][0]
    takers = []
    for name in classifier_names():
        accepted = model_options(name)
        if accepted is None or option in accepted:  # None: a builder that checks its own options
            takers.append(name)
    return takers


def classifier_names() -> list[str]:
    """The registered models that `jdl train` can train (classifiers)."""
    from jdl.models import MODELS

    return sorted(name for name, entry in MODELS.items() if entry.task == "classification")


class RunParts(NamedTuple):
    """The objects a :class:`RunConfig` builds."""

    dataset: Dataset
    model: Model
    loss_fn: Any
    optimizer: optax.GradientTransformation


def build_dataset(config: RunConfig) -> Dataset:
    kind = model_entry(config.model).input_kind
    if config.dataset == "digits":
        ds = load_dataset("digits", flatten=kind == "vector")
    else:
        ds = load_dataset(config.dataset)
        if kind == "image" and ds.train["x"].ndim != 4:
            raise ValueError(
                f"model {config.model!r} needs images but dataset {config.dataset!r} has inputs of "
                f"shape {ds.input_shape}; use --dataset digits or a vector/sequence model"
            )
    return standardize(ds) if config.standardize else ds


def steps_per_epoch(config: RunConfig, num_examples: int) -> int:
    return -(-num_examples // config.batch_size)


def build_optimizer(config: RunConfig, num_examples: int) -> optax.GradientTransformation:
    """The named optimizer at ``learning_rate``, times the schedule's factor.

    The schedule multiplies the update (``optax.scale_by_schedule``), which for
    every optimizer whose update is linear in η equals scheduling η itself.
    """
    base = get_optimizer(config.optimizer, config.learning_rate)
    if config.schedule == "constant":
        return base
    total = max(config.epochs * steps_per_epoch(config, num_examples), 1)
    return optax.chain(base, optax.scale_by_schedule(optax.cosine_decay_schedule(1.0, total)))


def build_run(config: RunConfig) -> RunParts:
    """Dataset, model, loss and optimizer for ``config``."""
    config.validate()
    ds = build_dataset(config)
    options = {MODEL_FIELDS[k][0]: v for k, v in model_settings(config).items() if v is not None}
    num_examples = len(ds.train["y"])
    if config.batch_size > num_examples:
        raise ValueError(
            f"batch size {config.batch_size} is larger than the {num_examples} training examples of "
            f"{config.dataset!r}; use --batch-size {num_examples} or less"
        )
    model = get_model(config.model, ds.input_shape, ds.num_classes, **options)
    return RunParts(ds, model, cross_entropy, build_optimizer(config, num_examples))


def initial_state(config: RunConfig, parts: RunParts) -> TrainState:
    sample = {k: v[: config.batch_size] for k, v in parts.dataset.train.items()}
    return create_train_state(parts.model, parts.optimizer, key=config.seed, batch=sample)


def read_config(run_dir: str) -> RunConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir} is not a jdl run directory (no {CONFIG_FILE}); pass the --out directory of a `jdl train` run"
        )
    try:
        with open(path) as f:
            config = RunConfig.from_json(json.load(f))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a valid run configuration ({e}); it is corrupt") from None
    try:
        return config.validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a valid run configuration: {e}") from None


class LoadedRun(NamedTuple):
    """A trained run rebuilt from its directory."""

    model: Model
    loss_fn: Any
    state: TrainState
    dataset: Dataset
    config: RunConfig
    history: list[dict]
    optimizer: optax.GradientTransformation


def load_run(run_dir: str | os.PathLike, *, epoch: int | None = None) -> LoadedRun:
    """Rebuild the model and dataset of a run and restore its checkpoint.

    The state is the one ``fit`` returned for that epoch: where a callback
    replaced it at the end (``EarlyStopping(restore_best=True)``), that one,
    not the last training state, which resuming continues from.

    Args:
      run_dir: a directory written by ``jdl train`` (or :func:`train_run`).
      epoch: which checkpoint (default: the latest).

    Raises:
      FileNotFoundError: not a run directory, or it holds no checkpoint.
      ValueError: the checkpoint is corrupt or does not match the config.
    """
    run_dir = os.fspath(run_dir)
    if epoch is not None:  # 2.0 or "2" named a checkpoint "2.0" that was reported as corrupt
        epoch = check_count(epoch, "epoch", 0, hint="a checkpoint's epoch number (an int), or None for the latest")
    config = read_config(run_dir)
    parts = build_run(config)
    template = initial_state(config, parts)
    ckpt = Checkpointer(os.path.join(run_dir, CHECKPOINT_DIR))
    try:
        if ckpt.latest_epoch() is None:
            raise FileNotFoundError(f"{run_dir} holds no checkpoint yet; train it first")
        state, meta = ckpt.restore(template, epoch)
        if "final" in meta.get("extra_states", []):  # what fit returned (e.g. the best epoch's state)
            state = ckpt.restore_extra(template, "final", epoch)
    finally:
        ckpt.close()
    return LoadedRun(
        parts.model, parts.loss_fn, state, parts.dataset, config, list(meta.get("history", [])), parts.optimizer
    )


def read_history(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line, object_hook=read_non_finite) for line in f if line.strip()]


def num_params(params) -> int:
    import jax

    return int(sum(np.size(p) for p in jax.tree.leaves(params)))
