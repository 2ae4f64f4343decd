"""`robult-jax <command>` / `python -m robult_jax`, and configs named from anywhere."""

import os
import subprocess
import sys
import textwrap

import pytest

from robult_jax import configs, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "robult_jax", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_packaged_configs_resolve_by_name_and_paths_pass_through(tmp_path):
    assert {"watch", "synthetic", "mfeat_supervised"} <= set(configs.names())
    assert configs.resolve("watch") == os.path.join(configs.DIRECTORY, "watch.py")
    assert configs.resolve("watch:fused") == os.path.join(configs.DIRECTORY, "watch.py:fused")
    assert configs.resolve("configs/watch.py:fused") == "configs/watch.py:fused"
    own = tmp_path / "mine.py"
    own.write_text("")
    assert configs.resolve(str(own)) == str(own)
    with pytest.raises(ValueError, match="packaged ones are: .*synthetic, tfds, watch"):
        configs.resolve("wacth")
    argv = ["prog", "--config", "watch", "--config=mfeat:fused", "--workdir", "w"]
    assert configs.resolve_config_flag(argv) == [
        "prog",
        "--config",
        os.path.join(configs.DIRECTORY, "watch.py"),
        f"--config={os.path.join(configs.DIRECTORY, 'mfeat.py')}:fused",
        "--workdir",
        "w",
    ]


def test_the_command_lists_its_commands_and_rejects_unknown_ones(tmp_path):
    out = _run("--help", cwd=tmp_path)
    assert out.returncode == 0 and "train" in out.stdout and "predict" in out.stdout
    out = _run("fit", cwd=tmp_path)
    assert out.returncode == 2 and "unknown command 'fit'" in out.stderr
    out = _run("train", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "--workdir" in out.stdout and "--config" in out.stdout
    out = _run("train", "--config", "wacth", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert out.returncode == 2 and "packaged ones are" in out.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_an_own_config_outside_the_repository_starts_from_a_packaged_one(tmp_path):
    (tmp_path / "my_config.py").write_text(
        textwrap.dedent(
            """
            from robult_jax.configs import synthetic

            def get_config(architecture="paper"):
                config = synthetic.get_config(architecture)
                config.train.num_steps = 2
                config.train.eval_every = 2
                config.eval.missing_rates = (0.5,)
                return config
            """
        )
    )
    workdir = tmp_path / "run"
    out = _run("train", "--config", "my_config.py:fused", "--workdir", str(workdir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (workdir / "results.json").exists()
    assert '"architecture": "fused"' in (workdir / "results.json").read_text()
    # Where the time went, after the results table: start-up, then the phases.
    time_line = [line for line in out.stdout.splitlines() if line.startswith("Time (s):")]
    assert len(time_line) == 1 and "start-up" in time_line[0], out.stdout[-2000:]
    assert all(f"{phase.replace('_', ' ')} " in time_line[0] for phase in train.PhaseTimes.PHASES)


OWN_ENCODER_AND_DATA = """
import flax.linen as nn
import ml_collections
import numpy as np

from robult_jax import encoders
from robult_jax.configs import synthetic
from robult_jax.data import Dataset, DatasetSpec, ModalitySpec, Split, register_dataset


class Tiny(nn.Module):
    latent_dim: int

    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(self.latent_dim)(x.reshape(len(x), -1))


encoders.register_encoder("tiny", lambda model, name: Tiny(model.latent_dim, name=name))


def load_blobs(data_config):
    rng = np.random.default_rng(0)

    def split(n):
        labels = (np.arange(n) % 3).astype(np.int32)
        x = (rng.normal(size=(n, 4)) + labels[:, None]).astype(np.float32)
        y = (rng.normal(size=(n, 6)) - labels[:, None]).astype(np.float32)
        return Split.complete({"x": x, "y": y}, labels)

    spec = DatasetSpec(
        "blobs", (ModalitySpec("x", (4,), "vector"), ModalitySpec("y", (6,), "vector")),
        task="multiclass", num_outputs=3,
    )
    return Dataset(spec, split(48), split(16), split(16))


register_dataset("blobs", load_blobs)


def get_config(architecture="paper"):
    config = synthetic.get_config(architecture)
    config.data = ml_collections.ConfigDict({"name": "blobs"})
    config.model.encoders = ml_collections.ConfigDict({"x": "tiny", "y": "mlp"})
    config.train.num_steps = 2
    config.train.eval_every = 2
    config.eval.missing_rates = (0.5,)
    return config
"""


@pytest.mark.slow
def test_an_own_encoder_and_dataset_loader_registered_in_an_own_config_file(tmp_path):
    """The extension points, without forking: registered where the CLI imports them."""
    (tmp_path / "blobs.py").write_text(OWN_ENCODER_AND_DATA)
    workdir = tmp_path / "run"
    out = _run("train", "--config", "blobs.py", "--workdir", str(workdir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    results = (workdir / "results.json").read_text()
    assert '"dataset": "blobs"' in results and '"x": "tiny"' in results


def test_register_encoder_refuses_clashes():
    from robult_jax import encoders

    with pytest.raises(ValueError, match="built-in encoder"):
        encoders.register_encoder("mlp", lambda model, name: None, overwrite=True)
    encoders.register_encoder("probe", lambda model, name: None, ranks=(1,), overwrite=True)
    assert encoders.encoder_names()[-1] == "probe"
    with pytest.raises(ValueError, match="already exists"):
        encoders.register_encoder("probe", lambda model, name: None)
    with pytest.raises(ValueError, match="rank"):
        encoders.check_encoder("probe", "m", (2, 3))


def test_own_arrays_need_no_config_file(tmp_path):
    """configs/arrays.py takes the file and the kinds its ranks leave open in the argument."""
    import numpy as np

    from robult_jax import config as config_lib
    from robult_jax.configs import arrays

    n = 12
    np.savez(
        tmp_path / "d.npz",
        feat=np.zeros((n, 5)),
        photo=np.zeros((n, 8, 8, 3)),
        accel=np.zeros((n, 20, 3)),
        labels=np.arange(n) % 2,
        mask=np.ones((n, 3), bool),
    )
    path = str(tmp_path / "d.npz")
    config = arrays.get_config(f"fused,path={path},accel=timeseries")
    assert config.data.path == path and config.model.architecture == "fused"
    assert config.data.modalities.to_dict() == {
        "feat": "vector", "photo": "image", "accel": "timeseries",
    }  # fmt: skip
    config_lib.from_config_dict(config)  # a valid config
    with pytest.raises(ValueError, match="add accel=timeseries, accel=image or accel=sequence"):
        arrays.get_config(f"path={path}")
    with pytest.raises(ValueError, match="no array 'acel'"):
        arrays.get_config(f"path={path},accel=timeseries,acel=image")
    with pytest.raises(ValueError, match="kind 'movie' of array 'accel'"):
        arrays.get_config(f"path={path},accel=movie")
    out = _run("train", "--config", f"arrays:path={path}", "--workdir", "w", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: --config: ValueError:" in out.stderr and "accel=timeseries" in out.stderr
