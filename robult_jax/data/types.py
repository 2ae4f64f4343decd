"""In-memory dataset containers shared by every data loader.

Shape legend: N examples, M modalities, C classes (or outputs).

Every loader returns a `Dataset`: a `DatasetSpec` (static description, also
used to build the model) plus three `Split`s of numpy arrays. The arrays stay
on the host; samplers copy rows out of them into batches, so nothing here is
ever mutated after construction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MODALITY_KINDS = ("vector", "timeseries", "image", "sequence")
TASKS = ("multiclass", "multilabel", "regression")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name, per-sample shape and kind."""

    name: str  # e.g. "acc"
    shape: tuple[int, ...]  # per-sample shape, e.g. (100, 3)
    kind: str  # "vector" | "timeseries" | "image" | "sequence"

    def __post_init__(self):
        if not self.name:
            raise ValueError("ModalitySpec.name must be a non-empty string.")
        if self.kind not in MODALITY_KINDS:
            raise ValueError(
                f"ModalitySpec.kind for {self.name!r} is {self.kind!r}; allowed: {MODALITY_KINDS}."
            )
        # Normalise lists to tuples so specs hash and compare by value.
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d <= 0 for d in self.shape):
            raise ValueError(
                f"ModalitySpec.shape for {self.name!r} must be positive, got {self.shape}."
            )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset: modalities, task and outputs."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    task: str  # "multiclass" | "multilabel" | "regression"
    num_outputs: int  # classes for multiclass/multilabel, 1 for regression
    class_names: tuple[str, ...] = ()
    variant: str = ""  # how results must name the data, e.g. "AV-MNIST-style (synthetic audio)"

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if not self.modalities:
            raise ValueError(f"DatasetSpec {self.name!r} needs at least one modality.")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"DatasetSpec {self.name!r} has duplicate modality names: {names}.")
        if self.task not in TASKS:
            raise ValueError(f"DatasetSpec.task is {self.task!r}; allowed: {TASKS}.")
        if self.num_outputs < 1:
            raise ValueError(f"DatasetSpec.num_outputs must be >= 1, got {self.num_outputs}.")
        if self.class_names and len(self.class_names) != self.num_outputs:
            raise ValueError(
                f"DatasetSpec.class_names has {len(self.class_names)} names but "
                f"num_outputs is {self.num_outputs}."
            )

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)


@dataclasses.dataclass
class Split:
    """One split, all numpy, in memory."""

    inputs: dict[str, np.ndarray]  # name -> (N, *shape) float32
    labels: np.ndarray  # (N,) int32 | (N, C) float32 | (N,) float32
    mask: np.ndarray  # (N, M) bool: modality present in the data itself

    def __post_init__(self):
        n = len(self.labels)
        for name, x in self.inputs.items():
            if x.shape[0] != n:
                raise ValueError(f"Split input {name!r} has {x.shape[0]} rows but labels have {n}.")
        if self.mask.dtype != np.bool_:
            raise ValueError(f"Split.mask must be bool, got {self.mask.dtype}.")
        if self.mask.shape != (n, len(self.inputs)):
            raise ValueError(
                f"Split.mask must have shape (N, M) = {(n, len(self.inputs))}, "
                f"got {self.mask.shape}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def complete(cls, inputs: dict[str, np.ndarray], labels: np.ndarray) -> Split:
        """A split in which every row has every modality."""
        return cls(inputs=inputs, labels=labels, mask=np.ones((len(labels), len(inputs)), bool))

    def validate(self, spec: DatasetSpec) -> None:
        """Checks that this split matches `spec` (names, order, shapes, dtypes)."""
        if tuple(self.inputs) != spec.modality_names:
            raise ValueError(
                f"Split inputs are {tuple(self.inputs)} but the spec lists "
                f"{spec.modality_names} (same names, same order)."
            )
        for m in spec.modalities:
            x = self.inputs[m.name]
            if x.shape[1:] != m.shape:
                raise ValueError(
                    f"Split input {m.name!r} has per-sample shape {x.shape[1:]}, "
                    f"spec says {m.shape}."
                )
            if x.dtype != np.float32:
                raise ValueError(f"Split input {m.name!r} must be float32, got {x.dtype}.")
        if spec.task == "multiclass":
            if self.labels.ndim != 1 or self.labels.dtype != np.int32:
                raise ValueError(
                    f"multiclass labels must be (N,) int32, got {self.labels.shape} "
                    f"{self.labels.dtype}."
                )
            if len(self) and (self.labels.min() < 0 or self.labels.max() >= spec.num_outputs):
                raise ValueError(f"multiclass labels must lie in [0, {spec.num_outputs}).")


@dataclasses.dataclass
class Dataset:
    """A dataset: its spec plus train / validation / test splits.

    `input_stats` records the normalisation the loader applied to the raw
    inputs, {modality: {"mean": ..., "std": ...}} with arrays broadcastable to
    the per-sample shape (x_loaded = (x_raw - mean) / std), so that
    `robult_jax.predict` can apply it to new raw data. None: nothing applied.

    `cleaning` counts what `robult_jax.data.clean` (applied by `load_dataset`)
    changed, per split: {"train": {"nonfinite_masked": {modality: rows},
    "dropped_all_missing": rows}, "validation": {...}, "test": {...}}, every
    split and modality present, zeros included. Empty: not cleaned (a Dataset
    built directly); a loader may fill in the counts of what it did itself.
    """

    spec: DatasetSpec
    train: Split
    validation: Split
    test: Split
    input_stats: dict[str, dict[str, np.ndarray]] | None = None
    cleaning: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for split in (self.train, self.validation, self.test):
            split.validate(self.spec)
        for name, stats in (self.input_stats or {}).items():
            if name not in self.spec.modality_names:
                raise ValueError(
                    f"Dataset.input_stats names {name!r}, not a modality of "
                    f"{self.spec.modality_names}."
                )
            if set(stats) != {"mean", "std"}:
                raise ValueError(
                    f"Dataset.input_stats[{name!r}] must have keys mean and std, "
                    f"got {sorted(stats)}."
                )
