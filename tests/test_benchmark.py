"""experiments/benchmark.py: its --quick path writes every field, with sane values; the
PyTorch reference has the JAX model's parameters and gives the same loss terms."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import config as config_lib
from robult_jax import configs, contrastive, host_memory, models, objective, tasks, train
from robult_jax.data import load_dataset
from robult_jax.data.synthetic import make_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


@pytest.mark.slow  # compiles the whole step at two batch sizes: ~30 s on 2 idle cores
def test_quick_benchmark_fields(tmp_path):
    out = tmp_path / "bench.json"
    # A subprocess: the benchmark sets up JAX itself (one CPU device, no test cache).
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for var in host_memory.ENVIRONMENT:
        env.pop(var, None)  # the allocator is the benchmark's own default choice
    cmd = [sys.executable, os.path.join(EXPERIMENTS, "benchmark.py"), "--quick"]
    subprocess.run([*cmd, "--output", str(out)], check=True, env=env, cwd=tmp_path, timeout=600)
    result = json.loads(out.read_text())

    assert result["machine"]["jax"] == jax.__version__ and result["machine"]["cpu_count"] > 0
    # What decides how host memory behaves: recorded (None where the system has no such file).
    for key in ("glibc_malloc_hugetlb", "transparent_hugepages", "page_reporting_order"):
        assert key in result["machine"], key
    # The allocator the benchmark restarted itself with, as loaded in its process.
    expected = ("mimalloc",) if host_memory.mimalloc_library() else ("glibc", "glibc+hugetlb")
    assert result["machine"]["malloc"] in expected
    assert result["matmul_peak"]["flops_per_s"] > 0
    (run,) = result["configs"]
    assert run["config"] == "synthetic" and run["inputs"] == "the dataset"
    assert [r["batch_size"] for r in run["batches"]] == [64, 128]
    for row in run["batches"]:
        assert row["labeled"] * 4 == row["batch_size"]  # 1:3 labeled:unlabeled
        assert row["num_params"] > 0 and row["flops"] > 0
        assert all(row["compile"][k] > 0 for k in ("trace_s", "lower_s", "compile_s"))
        assert row["jax"]["step_s"] > 0 and row["jax"]["samples_per_s"] > 0
        assert len(row["jax"]["step_s_all"]) == 2  # --quick: 2 repeats
        # The share is of the peak measured interleaved with this row's step.
        assert len(row["matmul_peak"]["times_s"]) == 2
        flops_per_s = row["flops"] / row["jax"]["step_s"]
        share = flops_per_s / row["matmul_peak"]["flops_per_s"]
        assert row["share_of_peak"] == pytest.approx(share) and 0 < share < 1.5
        assert row["flops"] == row["flops_xla"] + row["flops_in_loops"]
        assert row["contrastive"]["time_s"] > 0 and row["contrastive"]["flops"] > 0
        assert row["pipeline"]["preloaded_steps_per_s"] > 0
        assert row["pipeline"]["sampled_each_step_steps_per_s"] > 0
        assert list(row["memory"].values())[0] > 0
        assert row["torch"].startswith("skipped")  # --quick without --torch
    assert run["eval"]["subsets"] == 3 and run["eval"]["samples_per_s"] > 0
    (scaling,) = result["modality_scaling"]
    assert scaling["modalities"] == 2 and scaling["step_s"] > 0 and scaling["flops"] > 0
    assert 0 < scaling["share_of_peak"] < 1.5 and scaling["matmul_peak"]["flops_per_s"] > 0


def test_executed_flops_counts_every_block_of_rows():
    """XLA's cost analysis counts a loop's body once: with 4 blocks of anchor rows it
    misses 3 of the contrastive term's 4 blocks; executed_flops adds them back."""
    sys.path.insert(0, EXPERIMENTS)
    import bench_jax

    b, m, p = 1024, 2, 16
    assert contrastive.row_block(b, m, "cpu") == b // 4
    out = bench_jax.contrastive_term(b, m, p, num_classes=4, repeats=1)
    # Logits in the forward pass, again in the backward, and the two products with p.
    matmuls = 4 * (2 * b * b * p * m)
    assert out["flops_xla"] < matmuls / 2 and out["flops_in_loops"] > 0
    assert matmuls <= out["flops"] == out["flops_xla"] + out["flops_in_loops"]
    assert out["flops"] < 2 * matmuls  # the rest (exp, rho's kernel, masks) is smaller


@pytest.mark.parametrize("name", ["watch", "mfeat"])
def test_synthetic_stand_in_has_the_datasets_inputs(name, tmp_path):
    """--synthetic-inputs times the same model on inputs of the dataset's shapes and sizes."""
    sys.path.insert(0, EXPERIMENTS)
    import bench_jax

    config = configs.load(name)
    config.data.data_dir = str(tmp_path)  # built from the packaged source, here
    real = load_dataset(config.data)
    stand_in_config = bench_jax.load_config(name, batch_size=8, dtype="float32",
                                            synthetic_inputs=True)  # fmt: skip
    assert stand_in_config.data.name == "synthetic"
    assert stand_in_config.model == configs.load(name).model
    stand_in = load_dataset(stand_in_config.data)
    # In name order: a ConfigDict's keys are sorted, so the synthetic dataset's
    # modalities come in name order (encoders are chosen by name).
    modalities = lambda d: sorted((m.name, m.shape, m.kind) for m in d.spec.modalities)
    assert modalities(stand_in) == modalities(real)
    assert (stand_in.spec.task, stand_in.spec.num_outputs) == (
        real.spec.task,
        real.spec.num_outputs,
    )
    sizes = lambda d: (len(d.train), len(d.validation), len(d.test))
    assert sizes(stand_in) == sizes(real)


def test_synthetic_inputs_refuses_a_dataset_without_a_stand_in(capsys):
    sys.path.insert(0, EXPERIMENTS)
    import benchmark

    with pytest.raises(SystemExit):
        benchmark.parse_args(["--synthetic-inputs", "--datasets", "watch,av_digits"])
    assert "no synthetic stand-in for av_digits" in capsys.readouterr().err
    args = benchmark.parse_args(["--synthetic-inputs", "--datasets", "watch,synthetic"])
    assert args.synthetic_inputs and args.datasets == ("watch", "synthetic")


@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_torch_reference_matches_jax(architecture):
    """Same parameters in, the same loss terms out; the parameter count is equal."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, EXPERIMENTS)
    import torch_reference

    config = configs.load(f"watch:{architecture}")
    config.model.dropout_rate = 0.0  # deterministic, so both compute the same thing
    config.sampling.labeled_batch, config.sampling.unlabeled_batch = 4, 12
    cfg = config_lib.from_config_dict(config)
    shapes = {"acc": (100, 3), "gyro": (100, 3)}  # watch's modalities, data made in code
    dataset = make_synthetic(num_classes=7, num_train=70, modality_shapes=shapes)
    batch = train.make_sampler(cfg, dataset.train, np.arange(0, 70, 5)).batch(0)
    model = models.build_model(cfg.model, dataset.spec)
    tx = objective.make_optimizer(cfg.optim, cfg.train.num_steps)
    state = train.create_state(cfg, model, tx, dataset.spec, jax.random.key(0), batch)
    # Centroids in use (one class without), so that the RBF fallback is compared too.
    cent_CxP = models.l2_normalize(jax.random.normal(jax.random.key(1), (7, cfg.model.embed_dim)))
    state = state.replace(centroids_CxP=cent_CxP, centroid_valid_C=jnp.ones(7).at[2].set(0))
    task = tasks.get("multiclass")
    loss, aux = objective.compute_losses(
        state.params, model, batch, jax.random.key(2), state, cfg.loss, task
    )

    num_params = sum(np.size(x) for x in jax.tree.leaves(state.params))
    ref = torch_reference.Robult(cfg.model, dataset.spec)
    assert sum(p.numel() for p in ref.parameters()) == num_params
    torch_reference.load_flax_params(ref, jax.device_get(state.params))
    with torch.no_grad():
        total, terms, _, _ = torch_reference.compute_losses(
            ref, torch_reference.to_torch(batch), torch.from_numpy(np.array(cent_CxP)),
            torch.from_numpy(np.array(state.centroid_valid_C)), cfg.loss,
        )  # fmt: skip
    np.testing.assert_allclose(float(total), float(loss), rtol=1e-5)
    for name, value in aux["terms"].items():
        np.testing.assert_allclose(float(terms[name]), float(value), rtol=1e-5, err_msg=name)

    step = torch_reference.TorchStep(cfg, dataset.spec, [batch], compiled=False)
    assert step.num_params == num_params
    metrics = step.step(step.batches[0])
    assert np.isfinite(metrics["loss"].item()) and metrics["grad_norm"].item() > 0


@pytest.mark.slow  # starts a fresh interpreter with torch: ~20 s
def test_torch_worker_runs_the_reference_in_its_own_process():
    """The benchmark's PyTorch steps: built and timed in a child process, errors raised here."""
    pytest.importorskip("torch")
    sys.path.insert(0, EXPERIMENTS)
    import torch_worker

    config = configs.load("synthetic")
    cfg = config_lib.from_config_dict(config)
    dataset = make_synthetic(num_classes=3, num_train=64)
    batch = jax.device_get(train.make_sampler(cfg, dataset.train, np.arange(0, 64, 4)).batch(0))
    model = models.build_model(cfg.model, dataset.spec)
    tx = objective.make_optimizer(cfg.optim, cfg.train.num_steps)
    state = train.create_state(cfg, model, tx, dataset.spec, jax.random.key(0), batch)
    num_params = sum(np.size(x) for x in jax.tree.leaves(state.params))

    worker = torch_worker.TorchWorker(threads=1)
    try:
        assert worker.info["torch_threads"] == 1 and worker.info["torch"]
        assert worker.build(cfg, dataset.spec, [batch]) == dict.fromkeys(
            torch_worker.VARIANTS, num_params
        )
        assert worker.runner("torch_eager")(2) > 0  # seconds per step, timed in the worker
        with pytest.raises(RuntimeError, match="KeyError: 'nope'"):
            worker.runner("nope")(1)  # the worker's traceback, raised in this process
        assert worker.runner("torch_eager")(1) > 0  # and the worker goes on serving
    finally:
        worker.close()
    assert not worker._proc.is_alive()
