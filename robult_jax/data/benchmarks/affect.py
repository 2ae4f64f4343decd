"""CMU-MOSI / CMU-MOSEI sentiment (MultiBench affect pickles): vision, audio, text sequences.

Source (downloaded by hand; see docs/benchmark_formats.md
sections 3 and 5): the MultiBench README's Google Drive folders (mosi
1uEK737LXB9jAlf9kyqRs6B9N6cDncodq, mosei 1A_hTmifi824gypelGobgl2M-5Rw9VWHv),
or the MulT originals (Dropbox link in the MulT README). Files understood:

  mosi_data.pkl          aligned MOSI (MulT): vision 20, audio 5, text 300, T = 50
  mosi_raw.pkl           MOSI (MultiBench get_raw_data.py): vision 35, audio 74, text 300
  mosei_senti_data.pkl   aligned MOSEI (MulT): vision 35, audio 74, text 300

Put the file in `data.manual_dir` and name it with `data.pickle`. Each is a
pickled dict {'train', 'valid', 'test'} of dicts {'vision', 'audio', 'text':
(N, T, D) left-padded with zero steps, 'labels': (N, 1, 1) in [-3, 3], 'id'}.
The variant is detected from the keys and the feature widths. SECURITY:
unpickling runs code from the file: only load files from a source you trust.

The tfds builder `robult_affect` (one config per dataset and file) applies
MultiBench's loader steps once, in order, per split:
  1. drop every sample whose text sums to 0 (the count is logged per split);
  2. audio -inf -> 0; other NaN/inf -> 0 as well (logged: MultiBench leaves
     them, but one NaN would stop training);
  3. strip the LEFT padding: keep the steps from the first one whose text is
     non-zero, then re-pad on the RIGHT and append a validity channel (1.0 at
     valid steps, 0.0 at padding), so each modality becomes (T, D + 1),
     kind "sequence".
`load_affect` then cuts or zero-pads the time axis of each sample to
`data.seq_len` (the first steps are kept, like MultiBench's max_pad). Labels:
float32 (N,) sentiment in [-3, 3], task "regression" (Acc-2 etc. are derived
from it).

Data config fields read:
  name:       "mosi" or "mosei".
  manual_dir: folder holding the pickle (required).
  pickle:     file name inside manual_dir (default: mosi_data.pkl / mosei_senti_data.pkl).
  seq_len:    time steps kept (default 50).
  data_dir:   tfds cache directory (see `registry.resolve_data_dir`).
  streaming:  True: the sequences read from the cache on demand (each cut or
              padded to seq_len as it is read), labels in memory
              (`robult_jax.data.stream`); default False.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import stream
from robult_jax.data.benchmarks import common
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

log = logging.getLogger(__name__)

MODALITIES = ("vision", "audio", "text")
SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # pickle key -> our split
DEFAULT_PICKLE = {"mosi": "mosi_data.pkl", "mosei": "mosei_senti_data.pkl"}
DEFAULT_SEQ_LEN = 50
LABEL_RANGE = 3.0
# (vision, audio, text) widths -> variant, per dataset.
VARIANTS = {
    "mosi": {(20, 5, 300): "mosi_data", (35, 74, 300): "mosi_raw"},
    "mosei": {(35, 74, 300): "mosei_senti"},
}
SOURCE = {
    "mosi": (
        "MultiBench README (github.com/pliang279/MultiBench), Google Drive folder mosi "
        "1uEK737LXB9jAlf9kyqRs6B9N6cDncodq (mosi_data.pkl, mosi_raw.pkl); or the MulT "
        "README's Dropbox link (github.com/yaohungt/Multimodal-Transformer)."
    ),
    "mosei": (
        "MultiBench README (github.com/pliang279/MultiBench), Google Drive folder mosei "
        "1A_hTmifi824gypelGobgl2M-5Rw9VWHv (mosei_senti_data.pkl); or the MulT README's "
        "Dropbox link (github.com/yaohungt/Multimodal-Transformer)."
    ),
}


def read_affect_pickle(path: str) -> Any:
    """Unpickles `path`; a truncated or foreign file is a clear error."""
    try:
        with open(path, "rb") as f:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:
                f.seek(0)  # a Python 2 pickle of numpy arrays
                return pickle.load(f, encoding="latin1")
    except Exception as e:
        raise ValueError(
            f"{path}: cannot be unpickled ({type(e).__name__}: {e}); the file is truncated "
            f"or not a MultiBench affect pickle. Download it again."
        ) from e


def detect_variant(data: Any, path: str, dataset: str) -> str:
    """Variant name from keys and feature widths; clear errors for look-alike files."""
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {type(data).__name__}, expected a dict of splits.")
    missing = [k for k in SPLITS if k not in data]
    if missing:
        mmsa = any(isinstance(v, dict) and "regression_labels" in v for v in data.values())
        extra = " This looks like an MMSA file (regression_labels), another format." * mmsa
        raise ValueError(
            f"{path}: top-level keys {sorted(map(str, data))}; expected 'train', 'valid' and "
            f"'test' (missing {missing}).{extra}"
        )
    widths = set()
    for key in SPLITS:
        split = data[key]
        if not isinstance(split, dict):
            raise ValueError(f"{path}: [{key!r}] is a {type(split).__name__}, expected a dict.")
        if "regression_labels" in split or "text_bert" in split:
            raise ValueError(
                f"{path}: [{key!r}] has MMSA keys (regression_labels / text_bert); this is the "
                f"MMSA format, not a MultiBench affect pickle."
            )
        absent = [k for k in (*MODALITIES, "labels") if k not in split]
        if absent:
            raise ValueError(
                f"{path}: [{key!r}] lacks {absent}; expected vision, audio, text, labels, id."
            )
        shapes = {m: np.shape(split[m]) for m in MODALITIES}
        if any(len(s) != 3 for s in shapes.values()):
            raise ValueError(f"{path}: [{key!r}] arrays must be (N, T, D); got {shapes}.")
        if len({s[:2] for s in shapes.values()}) != 1:
            raise ValueError(
                f"{path}: [{key!r}] modalities differ in (N, T): {shapes}. Unaligned "
                f"(*_noalign.pkl) files are not supported; use the aligned file."
            )
        if np.size(split["labels"]) != shapes["text"][0]:
            raise ValueError(
                f"{path}: [{key!r}] labels has {np.size(split['labels'])} values for "
                f"{shapes['text'][0]} samples; expected (N, 1, 1)."
            )
        widths.add(tuple(s[2] for s in shapes.values()))
    if len(widths) != 1:
        raise ValueError(f"{path}: feature widths differ between splits: {sorted(widths)}.")
    (dims,) = widths
    if dims in VARIANTS[dataset]:
        return VARIANTS[dataset][dims]
    hint = ""
    if dims == (371, 81, 300):
        hint = " These are MUStARD / UR-FUNNY widths (sarcasm.pkl / humor.pkl), not CMU-MOSI/MOSEI."
    elif any(dims in v for v in VARIANTS.values()):
        hint = f" These widths belong to the other dataset: check data.name={dataset!r}."
    expected = ", ".join(f"{v} {k}" for k, v in VARIANTS[dataset].items())
    raise ValueError(
        f"{path}: (vision, audio, text) widths are {dims}; {dataset} expects {expected}.{hint}"
    )


def process_split(split: dict[str, Any], *, where: str) -> dict[str, np.ndarray]:
    """MultiBench's steps on one split (see the module docstring) -> right-padded arrays.

    Returns {vision, audio, text: (n, T, D + 1) float32 with the validity channel
    last, label: (n,) float32, index: (n,) int32 row in the file's split}.
    """
    xs = {m: np.asarray(split[m], dtype=np.float32) for m in MODALITIES}
    labels = np.asarray(split["labels"], dtype=np.float32).reshape(-1)
    if not np.isfinite(labels).all() or np.abs(labels).max(initial=0) > LABEL_RANGE + 1e-4:
        raise ValueError(f"{where}: labels must be finite sentiment scores in [-3, 3].")
    n, t = xs["text"].shape[:2]

    # 1. drop_entry: samples without any word.
    keep = xs["text"].sum(axis=(1, 2)) != 0
    if not keep.all():
        log.info("%s: dropped %d of %d samples whose text is all zeros", where, (~keep).sum(), n)
    xs = {m: x[keep] for m, x in xs.items()}
    labels, index = labels[keep], np.flatnonzero(keep).astype(np.int32)

    # 2. audio -inf -> 0 (MultiBench); remaining non-finite values -> 0 (ours).
    xs["audio"][np.isneginf(xs["audio"])] = 0.0
    for m, x in xs.items():
        bad = ~np.isfinite(x)
        if bad.any():
            log.warning("%s: %s has %d NaN/+inf values; set to 0", where, m, bad.sum())
            x[bad] = 0.0

    # 3. Move the left padding to the right: step j of the output reads step
    # start + j of the input, valid while start + j < T.
    start = np.argmax((xs["text"] != 0).any(axis=2), axis=1)  # first step with a word
    src_NxT = start[:, None] + np.arange(t)[None, :]
    valid_NxT = src_NxT < t
    src_NxT = np.minimum(src_NxT, t - 1)
    out = {}
    for m, x in xs.items():
        moved = np.take_along_axis(x, src_NxT[:, :, None], axis=1) * valid_NxT[:, :, None]
        out[m] = np.concatenate([moved, valid_NxT[:, :, None].astype(np.float32)], axis=2)
    out["label"] = labels
    out["index"] = index
    return out


def _config_name(dataset: str, pickle_name: str) -> str:
    stem = re.sub(r"[^a-z0-9_]", "_", os.path.splitext(pickle_name)[0].lower())
    return f"{dataset}__{stem}"


class RobultAffect(common.ManualBuilder):
    """tfds builder for the MOSI / MOSEI pickles (array_record); config = dataset + file."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MultiBench steps; right-padded with a validity channel."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "See robult_jax/data/benchmarks/affect.py."
    HOMEPAGE = "https://github.com/pliang279/MultiBench"
    CITATION = "Zadeh et al. (CMU-MOSI 2016, CMU-MOSEI 2018); Liang et al., MultiBench 2021."

    def _features(self) -> dict[str, Any]:
        # (T, D + 1): widths depend on the file variant, so both axes are dynamic;
        # the widths are recorded in metadata["dims"].
        seq = {
            m: tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes")
            for m in MODALITIES
        }
        return {
            **seq,
            "label": tfds.features.Tensor(shape=(), dtype=np.float32),
            "index": tfds.features.Tensor(shape=(), dtype=np.int32),
        }

    def _generate_examples(self, arrays) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(len(arrays["label"])):
            yield i, {k: arrays[k][i] for k in (*MODALITIES, "label", "index")}


def build_affect(data_dir: str, manual_dir: str, dataset: str, pickle_name: str) -> RobultAffect:
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    (path,) = common.check_files(manual_dir, [pickle_name], dataset=dataset, source=SOURCE[dataset])
    config = tfds.core.BuilderConfig(name=_config_name(dataset, pickle_name))
    return common.build_once(
        lambda **kw: RobultAffect(data_dir=data_dir, config=config, **kw),
        [path],
        lambda: _read(path, dataset),
        dataset=dataset,
        manual_dir=manual_dir,
    )


def _read(path: str, dataset: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The processed splits of the pickle at `path`, and the metadata the cache records.

    The raw pickle, which can be several GB, is freed on return, before the build.
    """
    data = read_affect_pickle(path)
    variant = detect_variant(data, path, dataset)
    source = {
        ours: process_split(data[key], where=f"{path} [{key!r}]") for key, ours in SPLITS.items()
    }
    dims = [int(source["train"][m].shape[2]) - 1 for m in MODALITIES]
    log.info("%s: %s variant, (vision, audio, text) widths %s", path, variant, dims)
    return source, {"variant": variant, "dims": dims}


def load_affect(data_config: Any, dataset: str | None = None) -> Dataset:
    """Builds (once) and loads CMU-MOSI or CMU-MOSEI (`dataset`, default data.name)."""
    dataset = dataset or getattr(data_config, "name", None)
    if dataset not in DEFAULT_PICKLE:
        raise ValueError(f"data.name is {dataset!r}; the affect loader reads 'mosi' or 'mosei'.")
    pickle_name = getattr(data_config, "pickle", None) or DEFAULT_PICKLE[dataset]
    manual_dir = common.require_manual_dir(
        data_config, dataset=dataset, example=f"/path/to/folder/containing/{pickle_name}"
    )
    seq_len = getattr(data_config, "seq_len", DEFAULT_SEQ_LEN)
    if not isinstance(seq_len, int | np.integer) or seq_len < 1:
        raise ValueError(f"data.seq_len is {seq_len!r}; it must be a positive integer (e.g. 50).")
    builder = build_affect(resolve_data_dir(data_config), manual_dir, dataset, pickle_name)
    dims = list(builder.info.metadata["dims"])
    shapes = {m: (seq_len, d + 1) for m, d in zip(MODALITIES, dims, strict=True)}
    spec = DatasetSpec(
        name=dataset,
        modalities=tuple(ModalitySpec(m, shapes[m], "sequence") for m in MODALITIES),
        task="regression",
        num_outputs=1,
    )
    splits = {}
    for s in SPLITS.values():
        # fit: the first seq_len steps of each sample (valid steps come first), zero-padded.
        arrays = stream.read_split(
            builder, s, shapes, ("label",), streaming=stream.enabled(data_config), fit=True
        )
        inputs = {m: arrays[m] for m in MODALITIES}
        splits[s] = Split.complete(inputs, arrays["label"].astype(np.float32))  # aligned
    return Dataset(spec=spec, **splits)


def load_mosi(data_config: Any) -> Dataset:
    """CMU-MOSI; see `load_affect`."""
    return load_affect(data_config, "mosi")


def load_mosei(data_config: Any) -> Dataset:
    """CMU-MOSEI; see `load_affect`."""
    return load_affect(data_config, "mosei")
