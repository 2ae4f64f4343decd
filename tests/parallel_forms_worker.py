"""The step forms on 1, 2, 4 and 8 fake CPU devices (run by tests/test_parallel_forms.py).

Usage: python tests/parallel_forms_worker.py paper|fused
Checks, in one 8-device process with sub-meshes of 1, 2, 4 and 8 devices, that
the shard_map step equals the jit step and that neither depends on the device
count; prints `OK <json>` with the losses, or raises. The device count is set
only when run as a script: importing this module (pytest's --doctest-modules
does) leaves the importing process as it was.
"""

import dataclasses
import json
import sys
import time

import chex
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robult_jax import models, objective, parallel, tasks, train
from robult_jax.data import load_dataset, sampler

# Losses and updates agree across forms and device counts up to the order of
# float32 reductions; an error in a collective (a local mean, a missing psum)
# is off by a factor of about the device count.
RTOL, ATOL = 1e-5, 1e-6
STEPS = 2  # the second step reads the centroids the first one updated


def setup(architecture: str, **overrides):
    """(config, model, tx, task, schedule, initial state, batches) on the synthetic data.

    The synthetic config with MLP encoders (as tests/test_train.py: cheaper to
    compile) and dropout 0: the shard_map form draws each device's dropout
    masks from its own key, so only without dropout are the forms equal step
    for step. The optimizer is the trainer's with eps = 1: Adam's first
    updates are lr * sign(g), and the sign of a gradient that is 0 in exact
    arithmetic (the attention's key bias) is rounding noise; with a large eps
    an update is about lr * g, so states differ as much as gradients do.
    """
    cheap = {"model.dropout_rate": 0.0, "model.encoders": {"a": "mlp", "b": "mlp"}}
    config = helpers.typed_config(architecture, **{**cheap, **overrides})
    dataset = load_dataset(config.data)
    model = models.build_model(config.model, dataset.spec)
    schedule = objective.make_schedule(config.optim, config.train.num_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(config.optim.grad_clip_norm),
        optax.adamw(0.1, eps=1.0, weight_decay=config.optim.weight_decay),
    )
    s = sampler.SemiSupervisedSampler(
        dataset.train,
        sampler.label_split(dataset.train.labels, 0.25, 0),
        labeled_batch=8,
        unlabeled_batch=8,
        modality_dropout=0.3,  # incomplete rows: no s for "paper", fewer candidates
        seed=0,
    )
    state = train.init_state(config, model, tx, dataset.spec, jax.random.key(0), s.batch(0))
    batches = [s.batch(step) for step in range(3, 3 + STEPS)]
    return config, model, tx, tasks.get(dataset.spec.task), schedule, state, batches


def run_steps(setup_result, devices, *, form: str, shard_params: bool = False, min_size=256):
    """Metrics of every step and the final state (numpy), as the trainer runs them."""
    config, model, tx, task, schedule, state, batches = setup_result
    pc = dataclasses.replace(
        config.parallel, form=form, shard_params=shard_params, shard_min_size=min_size
    )
    mesh = parallel.make_mesh(devices)
    # A copy: device_put may return `state` itself, which the donation would delete.
    state = parallel.place_state(jax.tree.map(jnp.copy, state), mesh, pc)
    step = objective.make_train_step(
        model, tx, config.loss, task, schedule, parallel_config=pc, mesh=mesh
    )
    placement = jax.tree.map(lambda x: x.sharding, state)
    # parallel.jit_train_step's program (tests/test_parallel_forms.py runs that one),
    # compiled with XLA's CPU back-end optimisations off: a third less compile
    # time for the ten programs of this check; the partitioning is the same.
    jitted = jax.jit(
        step,
        out_shardings=(placement, parallel.replicated(mesh)),
        donate_argnums=(0,),
        compiler_options={"xla_backend_optimization_level": 0},
    )
    metrics = []
    for batch in batches:
        state, m = jitted(state, parallel.shard_batch(batch, mesh), jax.random.key(1))
        metrics.append(jax.device_get(m))
    same = jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), state, placement)
    assert all(jax.tree.leaves(same)), "the step changed the state's placement"
    return metrics, jax.device_get(state)


def assert_same(a, b, what: str) -> None:
    """Metrics and states of two `run_steps` agree (RTOL, ATOL)."""
    (ma, sa), (mb, sb) = a, b
    for i, (x, y) in enumerate(zip(ma, mb, strict=True)):
        assert set(x) == set(y), (what, sorted(x), sorted(y))
        for k in x:
            np.testing.assert_allclose(x[k], y[k], rtol=RTOL, atol=ATOL, err_msg=f"{what} {i} {k}")
    chex.assert_trees_all_close(sa, sb, rtol=RTOL, atol=ATOL)


def main(architecture: str) -> None:
    timings = {}

    def timed(name, *args, **kwargs):
        started = time.time()
        result = run_steps(*args, **kwargs)
        timings[name] = round(time.time() - started, 1)
        return result

    started = time.time()
    s = setup(architecture)
    timings["setup"] = round(time.time() - started, 1)
    reference = timed("jit/1", s, jax.devices()[:1], form="jit")
    losses = {}
    for n in (1, 2, 4, 8):
        devices = jax.devices()[:n]
        jit_n = reference if n == 1 else timed(f"jit/{n}", s, devices, form="jit")
        shard_map_n = timed(f"shard_map/{n}", s, devices, form="shard_map")
        assert_same(jit_n, shard_map_n, f"{architecture}: jit vs shard_map on {n} devices")
        # The loss, every metric and the state do not depend on the device count.
        assert_same(reference, shard_map_n, f"{architecture}: shard_map on {n} vs 1 device")
        losses[n] = [float(m["loss"]) for m in shard_map_n[0]]
    # FSDP in both forms on 8 devices, with every parameter that can be split split.
    for form in ("jit", "shard_map"):
        fsdp = timed(f"{form}/8/shard_params", s, jax.devices(), form=form, shard_params=True)
        assert_same(reference, fsdp, f"{architecture}: {form} with shard_params on 8 devices")
    print("OK " + json.dumps({"losses": losses, "seconds": timings}))


if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", 8)
    main(sys.argv[1])
