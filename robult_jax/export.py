"""`robult-jax export`: a trained run's parameters alone, without optimizer state.

  robult-jax export --workdir runs/watch --output watch_params.msgpack

Writes the best checkpoint's parameters as Flax msgpack
(`flax.serialization.to_bytes`), plus `<output>.json` with what is needed to
use them: the config, the dataset spec and the best step. `--output` may be
a `gs://` path. Read back with (`from etils import epath`, local or `gs://`)

    params = flax.serialization.msgpack_restore(epath.Path(path).read_bytes())
    model = robult_jax.models.build_model(config.model, spec)
    model.apply({"params": params}, inputs, mask_BxM, train=False)

The workdir is only read (the checkpoint is verified against its digest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
from flax import serialization

from robult_jax import checkpointing, files


def export_params(workdir: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Writes `output` (msgpack params) and `output + ".json"`; returns the JSON record."""
    from robult_jax import predict  # the trainer's stack: only when exporting

    trained = predict.load_trained(workdir)
    params = jax.device_get(trained.params)
    config = files.read_json(files.as_path(workdir) / "config.json")
    record = {
        "workdir": os.fspath(files.absolute(workdir)),
        "best_step": trained.best_step,
        "num_parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        "dataset_spec": dataclasses.asdict(trained.spec),
        "config": config,
        "params_sha256": checkpointing.state_digest(params),
    }
    files.atomic_write(output, serialization.to_bytes(params))
    files.atomic_write(os.fspath(output) + ".json", json.dumps(record, indent=2).encode())
    return record


def run(argv: list[str] | None = None) -> None:
    """The command line (`argv` as sys.argv: program name first)."""
    parser = argparse.ArgumentParser(prog="robult-jax export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished training run")
    parser.add_argument("--output", required=True, help="the .msgpack file to write")
    args = parser.parse_args((sys.argv if argv is None else argv)[1:])
    try:
        record = export_params(args.workdir, args.output)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"Wrote {record['num_parameters']} parameters (best step {record['best_step']}) to "
        f"{args.output}, and what they need to {args.output}.json"
    )
