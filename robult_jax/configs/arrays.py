"""Your own arrays without writing a config file: the file and its modalities in the argument.

Run:
  robult-jax train --config "arrays:path=my_data.npz" --workdir runs/my_data
  robult-jax train --config "arrays:fused,path=my_data.npz,accel=timeseries" --workdir ...

The argument is comma-separated: optionally the architecture (`paper`, the
default, or `fused`), `path=<.npz or directory of .npy>`, and `<array>=<kind>`
for any modality whose kind is not clear from its per-sample rank. Every array
of the file is a modality except the label, mask and split arrays
(`data.label_key`, `data.mask_key`, `data.split_key`). Kinds by per-sample
rank: 1 -> "vector", 3 -> "image" (H, W, C); rank 2 is a time series (T, F),
a 2-D image (H, W) or a sequence (T, F + 1), so it must be named. Everything
else is configs/arrays_example.py (override any field as usual,
`--config.sampling.label_rate=0.2`); the encoders are the defaults of each kind.
"""

import ml_collections

from robult_jax.configs import arrays_example
from robult_jax.data import arrays as arrays_lib
from robult_jax.data.types import MODALITY_KINDS

KIND_BY_RANK = {1: "vector", 3: "image"}


def _parse(arg: str) -> tuple[str, str, dict[str, str]]:
    architecture, path, kinds = "paper", "", {}
    for item in filter(None, (x.strip() for x in arg.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            if key not in ("paper", "fused"):
                raise ValueError(
                    f"configs/arrays.py argument item {item!r}: expected paper, fused, "
                    "path=<file> or <array>=<kind>."
                )
            architecture = key
        elif key == "path":
            path = value
        elif value not in MODALITY_KINDS:
            raise ValueError(
                f"configs/arrays.py: kind {value!r} of array {key!r} is not one of "
                f"{', '.join(MODALITY_KINDS)}."
            )
        else:
            kinds[key] = value
    return architecture, path, kinds


def infer_modalities(path: str, kinds: dict[str, str], reserved: tuple[str, ...]) -> dict:
    """{array name: kind} of every modality array in `path` (module docstring)."""
    with arrays_lib.ArrayFile(path) as f:
        names = [n for n in f.names if n not in reserved]
        ranks = {n: f.get(n, "a modality").ndim - 1 for n in names}
    unknown = sorted(set(kinds) - set(names))
    if unknown:
        raise ValueError(
            f"{path} has no array {unknown[0]!r} (named with a kind); its arrays: "
            f"{', '.join(names) or 'none'}."
        )
    out = {}
    for name in names:
        kind = kinds.get(name) or KIND_BY_RANK.get(ranks[name])
        if kind is None:
            raise ValueError(
                f"{path}: the kind of array {name!r} (per-sample rank {ranks[name]}) cannot be "
                f"inferred: add {name}=timeseries, {name}=image or {name}=sequence to the "
                f'argument, e.g. --config "arrays:path={path},{name}=timeseries".'
            )
        out[name] = kind
    if not out:
        raise ValueError(f"{path} holds no modality arrays besides {', '.join(reserved)}.")
    return out


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
    architecture, path, kinds = _parse(arg)
    config = arrays_example.get_config(architecture)
    config.data.path = path
    config.model.encoders = ml_collections.ConfigDict()  # the default encoder of each kind
    if not path:  # no file yet (the argument alone, e.g. in tests): nothing to infer
        config.data.modalities = ml_collections.ConfigDict(kinds)
        return config
    reserved = (config.data.label_key, config.data.mask_key, config.data.split_key)
    config.data.modalities = ml_collections.ConfigDict(infer_modalities(path, kinds, reserved))
    return config
