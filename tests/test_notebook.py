"""The Colab quickstart, notebooks/quickstart.ipynb, runs headlessly and stays generated.

The notebook is executed with nbclient in a python3 kernel of this interpreter,
in its small mode (SMALL = True: synthetic data, 20 steps) on CPU, so that it
cannot rot; its install cell is skipped because robult_jax is importable.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_quickstart", NOTEBOOK.parent / "make_quickstart.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_generated_and_has_no_outputs():
    gen = _generator()
    with open(NOTEBOOK) as f:
        committed = f.read()
    assert committed == nbformat.writes(gen.build()) + "\n", (
        "notebooks/quickstart.ipynb differs from its generator: "
        "run `python notebooks/make_quickstart.py` and commit both"
    )
    nb = nbformat.reads(committed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.mark.slow
def test_quickstart_runs_in_small_mode(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [params] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    workdir = tmp_path / "run"
    # papermill-style injection: the defaults, then the overrides.
    params.source += (
        f"\n\n# injected by tests/test_notebook.py\nSMALL = True\nWORKDIR = {str(workdir)!r}"
    )
    # Which interpreter and which robult_jax the kernel runs (checked below).
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import sys, robult_jax\nprint(sys.executable)\nprint(robult_jax.__file__)"
        )
    )
    # The kernel inherits this environment: CPU, 2 devices (the multi-device path),
    # compiled programs cached in tmp, not in the user's cache.
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
    monkeypatch.setenv("ROBULT_JAX_COMPILE_CACHE", str(tmp_path / "jax_cache"))
    monkeypatch.setenv("ROBULT_JAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,  # per cell
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    assert (workdir / "results.md").is_file() and (workdir / "results.png").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "no inline image (results.png) in the outputs"
    markdown = "".join(
        o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})
    )
    assert "| condition |" in markdown  # results.md
    assert "| test sample | label | modalities given |" in markdown  # the predictions
    stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "is installed: nothing to do." in stdout
    assert "device_count: 2" in stdout
    executable, module = nb.cells[-1].outputs[0]["text"].split()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert Path(module).resolve().is_relative_to(ROOT)
