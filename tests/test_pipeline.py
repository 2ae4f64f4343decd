"""Per-process batch rows and the prefetching TrainBatches (robult_jax.data.pipeline)."""

import threading
import time
import traceback

import jax
import numpy as np
import pytest

from robult_jax import parallel
from robult_jax.data import pipeline, sampler
from robult_jax.data.synthetic import make_synthetic


def _sampler(**kw):
    split = make_synthetic(num_train=40).train
    mask = split.mask.copy()
    mask[::3, 0] = False  # some modalities missing in the data: dropout must respect them
    split = type(split)(inputs=split.inputs, labels=split.labels, mask=mask)
    args = dict(labeled_batch=4, unlabeled_batch=12, modality_dropout=0.4, seed=3)
    return sampler.SemiSupervisedSampler(split, np.arange(0, 40, 4), **{**args, **kw})


def _host(batch):
    return jax.tree.map(np.asarray, batch)


def _equal(a, b):
    chex_like = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
    return all(jax.tree.leaves(chex_like)) and jax.tree.structure(a) == jax.tree.structure(b)


def test_process_shares_concatenate_to_the_global_batch():
    s = _sampler()
    for step in (0, 1, 7, 1000):  # 1000: many epochs into both streams
        whole = s.batch(step)
        for n in (2, 4):
            size = s.batch_size // n
            parts = [s.batch(step, rows=slice(p * size, (p + 1) * size)) for p in range(n)]
            joined = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
            assert _equal(joined, whole), (step, n)


def test_process_rows_on_one_process_is_the_whole_batch():
    mesh = parallel.make_mesh()
    assert pipeline.process_rows(mesh, 16) == slice(0, 16)
    s = _sampler()
    on_devices = pipeline.device_batch(s, 5, mesh)
    assert _equal(_host(on_devices), s.batch(5))
    x = on_devices["inputs"]["a"]
    assert x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(x.addressable_shards) == jax.device_count()


@pytest.mark.parametrize("prefetch,group", [(0, None), (1, 1), (3, 1), (1, 4), (3, 4), (2, None)])
def test_train_batches_are_the_batches_in_order(prefetch, group):
    s, mesh = _sampler(), parallel.make_mesh()
    # 6 steps: groups of 4 end with a short one; the default (64 rows of 16) is one short group.
    with pipeline.TrainBatches(
        s, mesh, start_step=3, stop_step=9, prefetch=prefetch, group=group
    ) as batches:
        got = [(step, _host(b)) for step, b in batches]
    assert [step for step, _ in got] == list(range(3, 9))
    for step, b in got:
        assert _equal(b, s.batch(step)), step
    with pytest.raises(RuntimeError, match="iterated once"):
        next(iter(batches))


class _Failing:
    """A sampler whose batch 4 raises; records the thread each batch was made in."""

    def __init__(self, inner, delay=0.0):
        self.inner, self.delay, self.batch_size, self.threads = inner, delay, inner.batch_size, []

    def batch(self, step, rows=None):
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if step == 4:
            raise KeyError("broken record 4")
        return self.inner.batch(step, rows)


@pytest.mark.parametrize("prefetch,group", [(0, None), (2, 1), (2, 3), (2, None)])
def test_an_error_in_the_thread_is_raised_in_the_consumer_with_its_traceback(prefetch, group):
    failing = _Failing(_sampler())
    batches = pipeline.TrainBatches(
        failing, parallel.make_mesh(), start_step=0, stop_step=10, prefetch=prefetch, group=group
    )
    steps = []
    with pytest.raises(KeyError, match="broken record 4") as info, batches:
        for step, _ in batches:
            steps.append(step)
    assert steps == [0, 1, 2, 3]  # every batch before the failing one, whatever the groups
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "batch" in frames  # the sampler's own frame, where it was raised
    assert ("TrainBatches" in failing.threads) == (prefetch > 0)


@pytest.mark.parametrize("group,most", [(1, 5), (3, 10)])
def test_close_stops_the_thread_early(group, most):
    slow = _Failing(_sampler(), delay=0.02)
    batches = pipeline.TrainBatches(
        slow, parallel.make_mesh(), start_step=10, stop_step=10_000, prefetch=2, group=group
    )
    it = iter(batches)
    assert next(it)[0] == 10
    batches.close()
    assert not batches._thread.is_alive()
    made = len(slow.threads)
    # group 1: the one taken, two queued, one in the making (+1 to spare);
    # group 3: the group taken, one queued (2 steps need one), one in the making (+1).
    assert made <= most
    assert list(it) == []  # iteration ends once closed, in the middle of a group too
    time.sleep(0.1)
    assert len(slow.threads) == made


def test_a_closed_group_in_the_making_is_cut_short():
    slow = _Failing(_sampler(), delay=0.02)
    batches = pipeline.TrainBatches(
        slow, parallel.make_mesh(), start_step=0, stop_step=10_000, prefetch=1, group=1000
    )
    it = iter(batches)
    threading.Timer(0.1, batches.close).start()
    assert list(it) == []  # the first group was never finished
    assert len(slow.threads) < 20  # not 1000 batches of 20 ms before the close took effect


def test_groups_hold_about_group_rows():
    assert pipeline.group_size(128) == pipeline.GROUP_ROWS // 128 > 1
    assert pipeline.group_size(pipeline.GROUP_ROWS) == 1
    assert pipeline.group_size(10 * pipeline.GROUP_ROWS) == 1  # never less than one batch
    batches = pipeline.TrainBatches(
        _sampler(), parallel.make_mesh(), start_step=0, stop_step=1, prefetch=2
    )
    assert batches.group == pipeline.GROUP_ROWS // 16


def test_group_must_be_positive():
    with pytest.raises(ValueError, match="group=0 must be >= 1"):
        pipeline.TrainBatches(_sampler(), parallel.make_mesh(), start_step=0, stop_step=1,
                              prefetch=2, group=0)  # fmt: skip


def test_prefetch_must_not_be_negative():
    with pytest.raises(ValueError, match="prefetch=-1"):
        pipeline.TrainBatches(_sampler(), parallel.make_mesh(), start_step=0, stop_step=1,
                              prefetch=-1)  # fmt: skip
