"""What a workdir records about the run that owns it, and the checks that keep it its own.

  config.json  the run's config; a later run in the same workdir must have the
               same one, except for `RESUMABLE_FIELDS` (`check_workdir_config`)
  data.json    the data it was trained on: dataset, variant, content
               fingerprint (`data_record`, `check_workdir_data`)
  label_split.json  the labeled training rows, re-read and checked on resume
               (`label_split`)
  dataset_spec.json, input_stats.npz  what `robult_jax.predict` needs to use
               the model without the training data (`write_dataset_artifacts`)

So a typo in `--workdir` or a changed data file cannot mix two experiments:
the run stops with a message instead of resuming another run's checkpoints
(`robult_jax.checkpointing`). Every one is written with `files.atomic_write`.
"""

import dataclasses
import io
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from robult_jax import config as config_lib
from robult_jax import data as data_lib
from robult_jax import files
from robult_jax.data import sampler

# Fields that may change between a run and its resumption: they change how
# often things happen or how the result is evaluated, not what is trained.
# Not train.num_steps: the learning-rate schedule depends on it, so a run
# extended from 600 to 1000 steps would differ from a fresh 1000-step run.
RESUMABLE_FIELDS = (
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress_bar",
    "train.tensorboard",
    "train.prefetch",
    "train.profile_steps",
    "train.profile_start",
    "parallel.",  # checkpoints move between device counts and step forms
    "data.data_dir",
    "data.streaming",  # the same rows, read from disk on demand or held in memory
    "eval.",
)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (tuples as lists, as in config.json)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def check_workdir_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Raises if `workdir` belongs to a run with a different experiment config."""
    path = files.as_path(workdir) / "config.json"
    if not path.exists():
        return
    saved = flatten(json.loads(path.read_text()))
    current = flatten(config_to_dict(config))
    diffs = [
        f"  {k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k) and not any(k.startswith(p) for p in RESUMABLE_FIELDS)
    ]
    if diffs:
        why = ""
        if saved.get("train.num_steps") != current.get("train.num_steps"):
            why = (
                "\ntrain.num_steps cannot change on resume: the learning-rate schedule depends "
                "on it, so an extended run would not equal a fresh run of that length."
            )
        raise ValueError(
            f"--workdir {workdir} holds a run with a different config, and resuming it "
            "with this one would mix two experiments:\n"
            + "\n".join(diffs)
            + why
            + "\nUse a new --workdir (nothing in the old one was changed)."
        )


def check_workdir_data(workdir: str | os.PathLike, record: dict) -> None:
    """Raises if `workdir` was trained on other data (data.json: name, variant, fingerprint)."""
    path = files.as_path(workdir) / "data.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    keys = ("name", "variant", "fingerprint")
    diffs = [
        f"  {k}: saved {saved.get(k)!r}, now {record[k]!r}"
        for k in keys
        if saved.get(k) != record[k]
    ]
    if diffs:
        raise ValueError(
            f"--workdir {workdir} was trained on other data than this run loads (a data file "
            "was changed, or the dataset was rebuilt differently):\n"
            + "\n".join(diffs)
            + "\nIts checkpoints and results belong to the old data: use a new --workdir, "
            "or restore the old data (nothing in the workdir was changed)."
        )


def write_workdir_data(workdir: str | os.PathLike, record: dict) -> None:
    """Records which data the run uses (process 0); written atomically."""
    if jax.process_index() == 0:
        text = json.dumps(record, indent=2, sort_keys=True)
        files.atomic_write(files.as_path(workdir) / "data.json", text.encode())


def write_workdir_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Records the run's config (once, by process 0); written atomically."""
    if jax.process_index() == 0:
        text = json.dumps(config_to_dict(config), indent=2, sort_keys=True)
        files.atomic_write(files.as_path(workdir) / "config.json", text.encode())


def data_record(dataset) -> dict:
    """What a workdir records of its data (data.json, results.json): checked on resume."""
    spec = dataset.spec
    return {
        "name": spec.name,
        "variant": spec.variant or spec.name,
        "fingerprint": data_lib.fingerprint(dataset),
        "cleaning": dataset.cleaning,
    }


def label_split(
    sampling: config_lib.SamplingConfig, dataset, workdir: str, record: dict
) -> tuple[np.ndarray, bool]:
    """The labeled training indices, and whether they still have to be saved.

    On resume the saved split is re-read and checked against the rate, seed,
    dataset and data fingerprint of this run; a mismatch raises before anything
    is written.
    """
    path = files.as_path(workdir) / "label_split.json"
    check = dict(rate=sampling.label_rate, seed=sampling.label_seed)
    check.update(dataset=record["name"], fingerprint=record["fingerprint"])
    if path.exists():  # resume; or a first attempt that stopped right after writing it
        return sampler.load_label_split(path, **check)[0], False
    idx = sampler.label_split(dataset.train.labels, sampling.label_rate, sampling.label_seed)
    return idx, True


def write_dataset_artifacts(workdir: str, dataset) -> None:
    """What `robult_jax.predict` needs to use the model without the training data.

    dataset_spec.json: modalities, task and outputs (to rebuild the model);
    input_stats.npz: the normalisation the loader applied, keys "<modality>/mean"
    and "<modality>/std" (absent when the loader normalises nothing).
    """
    spec_json = json.dumps(dataclasses.asdict(dataset.spec), indent=2)
    files.atomic_write(files.as_path(workdir) / "dataset_spec.json", spec_json.encode())
    stats = getattr(dataset, "input_stats", None)
    if stats:
        buffer = io.BytesIO()
        np.savez(
            buffer, **{f"{m}/{k}": np.asarray(v) for m, d in stats.items() for k, v in d.items()}
        )
        files.atomic_write(files.as_path(workdir) / "input_stats.npz", buffer.getvalue())
