"""AV-MNIST (MultiBench variant): MNIST images + spoken-digit spectrograms, 10 classes.

Source (downloaded by hand; see docs/benchmark_formats.md
section 1): `avmnist.tar.gz` from the MultiBench README (Google Drive file
1KvKynJJca5tDtI5Mmp6CoRh9pQywH8Xp). Unpack it and point `data.manual_dir` at
the folder that contains `avmnist/` (or at `avmnist/` itself):

  avmnist/image/train_data.npy   (60000, 784) float  flattened 28x28 PCA image
  avmnist/image/test_data.npy    (10000, 784) float
  avmnist/audio/train_data.npy   (60000, 112, 112) uint8 spectrogram picture
  avmnist/audio/test_data.npy    (10000, 112, 112) uint8
  avmnist/train_labels.npy       (60000,) digits 0-9
  avmnist/test_labels.npy        (10000,)

`avmnist_temp/` in the archive is a leftover without audio and is ignored.

The tfds builder `robult_avmnist` stores the files unchanged in meaning
(image as float32 (28, 28), audio as uint8) in splits "train" and "test".
`load_avmnist` then follows MultiBench's loader: both modalities divided by
255 (the images are mean-centred PCA reconstructions, so they stay centred on
zero), and validation = the LAST `data.val_rows` train rows, unshuffled
(5000 on the real files: train rows 0-54999, validation 55000-59999).

Data config fields read:
  manual_dir: folder holding `avmnist/` (required).
  data_dir:   tfds cache directory (see `registry.resolve_data_dir`).
  val_rows:   the last k train rows form the validation split (default 5000).
  streaming:  True: images and spectrograms read from the cache on demand (and
              divided by 255 as they are read), labels in memory
              (`robult_jax.data.stream`); default False.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import clean, stream
from robult_jax.data.benchmarks import common
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

NAME = "avmnist"
CLASS_NAMES = tuple(str(d) for d in range(10))
IMAGE_SHAPE = (28, 28)
AUDIO_SHAPE = (112, 112)
SHAPES = {"image": IMAGE_SHAPE, "audio": AUDIO_SHAPE}  # modality -> per-sample shape
DEFAULT_VAL_ROWS = 5000
SOURCE = (
    "MultiBench README (github.com/pliang279/MultiBench), avmnist.tar.gz (Google Drive file "
    "1KvKynJJca5tDtI5Mmp6CoRh9pQywH8Xp); unpack it into data.manual_dir."
)
# Relative to the `avmnist/` folder.
FILES = {
    ("train", "image"): "image/train_data.npy",
    ("test", "image"): "image/test_data.npy",
    ("train", "audio"): "audio/train_data.npy",
    ("test", "audio"): "audio/test_data.npy",
    ("train", "label"): "train_labels.npy",
    ("test", "label"): "test_labels.npy",
}

AVMNIST_SPEC = DatasetSpec(
    name=NAME,
    modalities=(
        ModalitySpec("image", IMAGE_SHAPE, "image"),
        ModalitySpec("audio", AUDIO_SHAPE, "image"),
    ),
    task="multiclass",
    num_outputs=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
)


def find_avmnist_dir(manual_dir: str) -> str:
    """The `avmnist/` folder: `manual_dir/avmnist` or `manual_dir` itself."""
    nested = os.path.join(manual_dir, "avmnist")
    if os.path.isdir(nested):
        return nested
    if os.path.isfile(os.path.join(manual_dir, FILES[("train", "image")])):
        return manual_dir  # the user pointed at avmnist/ itself
    return nested  # report the expected layout under manual_dir/avmnist


def read_avmnist_source(root: str) -> dict[str, dict[str, np.ndarray]]:
    """Memory-maps and checks the six .npy files; returns {split: {image, audio, label}}."""
    paths = common.check_files(root, list(FILES.values()), dataset=NAME, source=SOURCE)
    arrays: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    for ((split, key), _), path in zip(FILES.items(), paths, strict=True):
        try:
            # mmap: the train audio is 750 MB; it is read in chunks while building.
            arrays[split][key] = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # truncated or not an .npy file
            raise ValueError(
                f"{path}: cannot be read as a .npy array ({type(e).__name__}: {e}). "
                f"Re-extract avmnist.tar.gz."
            ) from e
    for split, files in arrays.items():
        _check_split(root, split, files)
    return arrays


def _check_split(root: str, split: str, files: dict[str, np.ndarray]) -> None:
    image, audio, label = files["image"], files["audio"], files["label"]
    where = {k: os.path.join(root, FILES[(split, k)]) for k in files}
    if label.ndim != 1:
        raise ValueError(f"{where['label']}: shape {label.shape}; expected (N,) digits 0-9.")
    n = label.shape[0]
    if image.shape != (n, 28 * 28):
        raise ValueError(
            f"{where['image']}: shape {image.shape}; expected ({n}, 784) (N flattened 28x28 "
            f"images, N matching {where['label']})."
        )
    if audio.shape != (n, *AUDIO_SHAPE):
        raise ValueError(
            f"{where['audio']}: shape {audio.shape}; expected ({n}, 112, 112) (N spectrograms, "
            f"N matching {where['label']})."
        )
    for key in files:
        if not np.issubdtype(files[key].dtype, np.number):
            raise ValueError(f"{where[key]}: dtype {files[key].dtype} is not numeric.")
    if not np.isin(label, np.arange(10)).all():
        raise ValueError(f"{where['label']}: labels must be the digits 0-9.")
    if not np.isfinite(np.asarray(image)).all():
        raise ValueError(f"{where['image']}: contains NaN or inf values.")
    if audio.dtype != np.uint8 and n:
        a = np.asarray(audio)
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 255):
            raise ValueError(
                f"{where['audio']}: dtype {audio.dtype} with values outside [0, 255]; "
                f"expected uint8 spectrogram pictures."
            )


class RobultAvmnist(common.ManualBuilder):
    """tfds builder for AV-MNIST from the user's avmnist/ folder (array_record)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MultiBench avmnist.tar.gz: image (28, 28) float32, audio uint8."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCE
    HOMEPAGE = "https://github.com/pliang279/MultiBench"
    CITATION = "Liang et al., MultiBench, NeurIPS Datasets and Benchmarks 2021."

    def _features(self) -> dict[str, Any]:
        return {
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
            "audio": tfds.features.Tensor(shape=AUDIO_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            "row": tfds.features.Tensor(shape=(), dtype=np.int32),
        }

    def _generate_examples(self, files) -> Iterator[tuple[int, dict[str, Any]]]:
        def read_rows(rows: slice) -> dict[str, np.ndarray]:
            audio = np.asarray(files["audio"][rows])
            if audio.dtype != np.uint8:  # values were checked to lie in [0, 255]
                audio = np.rint(audio).astype(np.uint8)
            return {
                "image": np.asarray(files["image"][rows], np.float32).reshape(-1, *IMAGE_SHAPE),
                "audio": audio,
                "label": np.asarray(files["label"][rows]).astype(np.int64),
            }

        return common.chunked_examples(files["label"].shape[0], 2048, read_rows)


def build_avmnist(data_dir: str, manual_dir: str) -> RobultAvmnist:
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    root = find_avmnist_dir(manual_dir)
    paths = common.check_files(root, list(FILES.values()), dataset=NAME, source=SOURCE)
    return common.build_once(
        lambda **kw: RobultAvmnist(data_dir=data_dir, **kw),
        paths,
        lambda: (read_avmnist_source(root), {}),
        dataset=NAME,
        manual_dir=manual_dir,
    )


def _scale(x: np.ndarray) -> np.ndarray:
    """MultiBench's loader divides both modalities by 255 (no mean/std scaling)."""
    return x / np.float32(255.0)  # float32 in and out


def _to_split(arrays: dict[str, Any], rows: slice) -> Split:
    inputs = {k: stream.transformed(clean.take_rows(arrays[k], rows), _scale) for k in SHAPES}
    # Both modalities are always present.
    return Split.complete(inputs, arrays["label"][rows].astype(np.int32))


def load_avmnist(data_config: Any) -> Dataset:
    """Builds (once) and loads AV-MNIST as numpy (or streamed) train/validation/test."""
    manual_dir = common.require_manual_dir(
        data_config, dataset=NAME, example="/path/to/folder/containing/avmnist"
    )
    val_rows = getattr(data_config, "val_rows", DEFAULT_VAL_ROWS)
    if not isinstance(val_rows, int | np.integer) or val_rows < 1:
        raise ValueError(
            f"data.val_rows is {val_rows!r}; it must be a positive integer (the last k train "
            f"rows become validation; MultiBench uses 5000)."
        )
    builder = build_avmnist(resolve_data_dir(data_config), manual_dir)
    train_all, test_all = (
        stream.read_split(builder, s, SHAPES, ("label",), streaming=stream.enabled(data_config))
        for s in ("train", "test")
    )
    n_train = len(train_all["label"])
    if val_rows >= n_train:
        raise ValueError(
            f"data.val_rows={val_rows} leaves no training rows: the train files have only "
            f"{n_train} rows. Use a smaller data.val_rows (MultiBench uses 5000 of 60000)."
        )
    cut = n_train - val_rows
    return Dataset(
        spec=AVMNIST_SPEC,
        train=_to_split(train_all, slice(0, cut)),
        validation=_to_split(train_all, slice(cut, n_train)),
        test=_to_split(test_all, slice(None)),
    )
