"""A synthetic multimodal dataset made in code: smoke tests, tutorials, CI.

Each class c has a random prototype; modality i sees it through its own random
linear map plus Gaussian noise, so every modality carries the label
(redundant information), and an extra per-modality class code that only that
modality sees (unique information). Time-series modalities spread the signal
over T steps. Nothing is downloaded or written to disk.

Config fields read (`data.`): num_classes, num_train, num_val, num_test,
modality_shapes (a ConfigDict name -> shape tuple; 1 dim = vector,
2 dims = timeseries), noise.
"""

import numpy as np

from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

DEFAULT_SHAPES = {"a": (8,), "b": (16, 3)}


def _modality_kind(shape: tuple[int, ...]) -> str:
    return {1: "vector", 2: "timeseries", 3: "image"}[len(shape)]


def make_synthetic(
    *,
    num_classes: int = 3,
    num_train: int = 96,
    num_val: int = 32,
    num_test: int = 32,
    modality_shapes: dict[str, tuple[int, ...]] | None = None,
    noise: float = 0.5,
    seed: int = 0,
    task: str = "multiclass",
) -> Dataset:
    """`task` "multilabel" labels each sample with its class and the next one (mod C);
    "regression" uses the class index, centred, as the target value."""
    shapes = dict(modality_shapes or DEFAULT_SHAPES)
    if task not in ("multiclass", "multilabel", "regression"):
        raise ValueError(f"data.task={task!r} is not one of multiclass, multilabel, regression.")
    if num_classes < 2:
        raise ValueError(f"data.num_classes={num_classes} must be >= 2.")
    rng = np.random.default_rng(seed)
    latent = 8
    protos = rng.normal(size=(num_classes, latent))
    projections = {
        name: rng.normal(size=(latent, int(np.prod(shape)))) / np.sqrt(latent)
        for name, shape in shapes.items()
    }
    uniques = {
        name: rng.normal(size=(num_classes, int(np.prod(shape)))) * 0.5
        for name, shape in shapes.items()
    }

    def split(n: int) -> Split:
        labels = (np.arange(n) % num_classes).astype(np.int32)
        rng.shuffle(labels)
        inputs = {}
        for name, shape in shapes.items():
            signal = protos[labels] @ projections[name] + uniques[name][labels]
            x = signal + noise * rng.normal(size=signal.shape)
            inputs[name] = x.reshape((n,) + tuple(shape)).astype(np.float32)
        if task == "multilabel":
            targets = np.eye(num_classes, dtype=np.float32)[labels]
            targets += np.eye(num_classes, dtype=np.float32)[(labels + 1) % num_classes]
        elif task == "regression":
            targets = (labels - (num_classes - 1) / 2).astype(np.float32)
        else:
            targets = labels
        return Split.complete(inputs, targets)

    spec = DatasetSpec(
        name="synthetic",
        modalities=tuple(
            ModalitySpec(name, tuple(shape), _modality_kind(tuple(shape)))
            for name, shape in shapes.items()
        ),
        task=task,
        num_outputs=1 if task == "regression" else num_classes,
        class_names=() if task == "regression" else tuple(f"class_{c}" for c in range(num_classes)),
    )
    return Dataset(
        spec=spec, train=split(num_train), validation=split(num_val), test=split(num_test)
    )


def load_synthetic(data_config) -> Dataset:
    """Registry entry: builds the dataset from `data.*` fields (defaults where absent)."""
    get = lambda k, d: data_config.get(k, d) if hasattr(data_config, "get") else d
    shapes = get("modality_shapes", None)
    shapes = {k: tuple(v) for k, v in dict(shapes).items()} if shapes else None
    return make_synthetic(
        num_classes=get("num_classes", 3),
        num_train=get("num_train", 96),
        num_val=get("num_val", 32),
        num_test=get("num_test", 32),
        modality_shapes=shapes,
        noise=get("noise", 0.5),
        seed=get("synthetic_seed", 0),
        task=get("task", "multiclass"),
    )
