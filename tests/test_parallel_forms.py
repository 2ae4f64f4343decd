"""The step forms (`parallel.form`) and parameter sharding (`parallel.shard_params`).

The 1/2/4/8-device comparisons run in one subprocess per architecture
(tests/parallel_forms_worker.py: 8 fake devices, sub-meshes of 1, 2, 4, 8);
the rest runs here, on conftest.py's 4 devices, with the trainer's own
`parallel.jit_train_step`.
"""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import parallel_forms_worker as worker
import pytest
from jax.sharding import PartitionSpec as P

from robult_jax import checkpointing, evaluate, objective, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_SIZE = 256  # shards the synthetic model's kernels (>= 8 x 32), not its biases


@functools.cache
def _setup(architecture: str = "paper"):
    return worker.setup(architecture)


def _parallel(form="jit", shard_params=False):
    config = _setup()[0]
    return dataclasses.replace(
        config.parallel, form=form, shard_params=shard_params, shard_min_size=MIN_SIZE
    )


@functools.cache
def _workers() -> dict:
    """Both architectures' worker processes, started together (2 cores: they overlap)."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    script = os.path.join(ROOT, "tests", "parallel_forms_worker.py")
    return {
        a: subprocess.Popen(
            [sys.executable, script, a],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in ("paper", "fused")
    }


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["paper", "fused"])
def test_shard_map_step_equals_jit_step_on_1_2_4_8_devices(architecture):
    """Loss, every metric, parameters, optimizer state and centroids after two steps:
    shard_map == jit on each device count, both == one device, also with shard_params."""
    proc = _workers()[architecture]
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    line = next(x for x in out.splitlines() if x.startswith("OK "))
    losses = json.loads(line[3:])["losses"]
    # Negatives do not shrink as devices are added: the loss is that of the global batch.
    np.testing.assert_allclose(losses["1"], losses["8"], rtol=1e-6)


def test_param_spec_splits_large_arrays_on_their_largest_divisible_axis():
    assert parallel.param_spec((512, 256), 4, 65536) == P("data")
    assert parallel.param_spec((30, 4096), 4, 65536) == P(None, "data")
    assert parallel.param_spec((3, 3, 64, 64), 4, 1) == P(None, None, "data")  # first of ties
    assert parallel.param_spec((256, 256), 4, 65537) == P()  # below shard_min_size
    assert parallel.param_spec((7, 9999), 4, 1) == P()  # no axis divisible by 4
    assert parallel.param_spec((512, 256), 1, 1) == P()  # one device: nothing to split
    assert parallel.param_spec((), 4, 1) == P()


def test_state_shardings_split_parameters_and_their_moments_only():
    state = _setup()[5]
    mesh = parallel.make_mesh()
    shardings = parallel.state_shardings(state, mesh, _parallel(shard_params=True))
    specs = lambda tree: [s.spec for s in jax.tree.leaves(tree)]
    param_specs = specs(shardings.params)
    assert P() in param_specs and any("data" in s for s in param_specs)  # biases stay whole
    for leaf, spec in zip(jax.tree.leaves(state.params), param_specs, strict=True):
        assert ("data" in spec) == (leaf.size >= MIN_SIZE), (leaf.shape, spec)
    # Adam's mu and nu take their parameter's spec; its step count stays replicated.
    is_adam = lambda x: hasattr(x, "mu")
    (adam,) = [x for x in jax.tree.leaves(shardings.opt_state, is_leaf=is_adam) if is_adam(x)]
    assert specs(adam.mu) == specs(adam.nu) == param_specs
    assert adam.count.spec == P()
    for part in (shardings.step, shardings.centroids_CxP, shardings.centroid_valid_C):
        assert part.spec == P()
    off = parallel.state_shardings(state, mesh, _parallel(shard_params=False))
    assert set(specs(off)) == {P()}


def test_shard_map_form_needs_the_mesh():
    config, model, tx, task, schedule, _, _ = _setup()
    with pytest.raises(ValueError, match="needs the mesh"):
        objective.make_train_step(
            model, tx, config.loss, task, schedule, parallel_config=_parallel("shard_map")
        )


@pytest.mark.slow
def test_fsdp_step_keeps_its_placement_and_equals_the_replicated_step():
    """The trainer's program (parallel.jit_train_step), jit form, 4 devices."""
    config, model, tx, task, schedule, state, batches = _setup()
    mesh = parallel.make_mesh()
    results = []
    for shard_params in (False, True):
        pc = _parallel(shard_params=shard_params)
        placed = parallel.place_state(jax.tree.map(jnp.copy, state), mesh, pc)
        before = jax.tree.map(lambda x: x.sharding, placed)
        step = objective.make_train_step(
            model, tx, config.loss, task, schedule, parallel_config=pc, mesh=mesh
        )
        jitted = parallel.jit_train_step(step, placed, mesh)
        metrics = []
        for batch in batches:
            placed, m = jitted(placed, parallel.shard_batch(batch, mesh), jax.random.key(1))
            metrics.append(jax.device_get(m))
        # No silent replication: every leaf comes back as it went in.
        for x, s in zip(jax.tree.leaves(placed), jax.tree.leaves(before), strict=True):
            assert x.sharding.is_equivalent_to(s, x.ndim), (x.shape, x.sharding, s)
        kernel = placed.params["shared_g0"]["Dense_0"]["kernel"]  # (16, 32)
        assert kernel.sharding.shard_shape(kernel.shape) == ((16, 8) if shard_params else (16, 32))
        results.append((metrics, jax.device_get(placed)))
    worker.assert_same(results[0], results[1], "replicated vs shard_params on 4 devices")


def test_checkpoints_restore_across_placements(tmp_path):
    """Saved FSDP-sharded on 4 devices, restored replicated on 1 (and back): same values."""
    state = _setup()[5]
    state = state.replace(step=jnp.asarray(3, jnp.int32))
    four, one = parallel.make_mesh(), parallel.make_mesh(jax.devices()[:1])
    sharded = parallel.place_state(state, four, _parallel(shard_params=True))
    assert any(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(sharded.params))  # fmt: skip

    ckpt = checkpointing.Checkpointer(str(tmp_path / "a"), keep=1)
    ckpt.save(3, sharded)
    ckpt.wait_until_finished()
    replicated_1 = parallel.place_state(state, one, _parallel())
    restored = ckpt.restore_latest(checkpointing.abstract_like(replicated_1))
    ckpt.close()
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
    for x in jax.tree.leaves(restored):
        assert x.sharding.device_set == {jax.devices()[0]}

    ckpt = checkpointing.Checkpointer(str(tmp_path / "b"), keep=1)
    ckpt.save(3, replicated_1)
    ckpt.wait_until_finished()
    back = ckpt.restore_latest(checkpointing.abstract_like(sharded))
    ckpt.close()
    chex.assert_trees_all_equal(jax.device_get(back), jax.device_get(state))
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(sharded), strict=True):
        assert x.sharding.is_equivalent_to(y.sharding, x.ndim)


def test_predict_fn_works_with_sharded_params():
    config, model, _, _, _, state, batches = _setup()
    mesh = parallel.make_mesh()
    predict = evaluate.make_predict_fn(model, mesh)
    batch = parallel.shard_batch({k: batches[0][k] for k in ("inputs", "mask")}, mesh)
    outputs = []
    for shard_params in (False, True):
        placed = parallel.place_state(state, mesh, _parallel(shard_params=shard_params))
        logits = predict(placed.params, batch["inputs"], batch["mask"])
        assert logits.sharding.is_fully_replicated
        outputs.append(np.asarray(logits))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
