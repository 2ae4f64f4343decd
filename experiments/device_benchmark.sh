#!/usr/bin/env bash
# The benchmark's accelerator table in one command: the default watch model
# (paper and fused) at global batches 128 to 8192, float32 then bfloat16, on
# synthetic inputs of watch's shapes (`benchmark.py --synthetic-inputs`), so
# that no dataset package is needed. Writes bench_<dtype>.json and .log and
# devices.txt to $OUT (default ./device_out). BATCH_SIZES=64,128 (say) for
# other batches, PYTHON for another interpreter. With BATCH_SIZES=64 it ran
# in 70 s on 2 CPU cores; it has not yet run on a GPU.
#
#   bash experiments/device_benchmark.sh
#
# Where this project is installed (`make setup`, or pip install -e .), that
# is all. On a machine whose Python already has JAX with its accelerator
# plugin, Flax, Optax and etils but cannot reach a package index (as the
# GPU machines lent to this project's sessions, whose image lacks only
# ml-collections of what the benchmark imports), download that wheel on a
# machine with pip, into an ignored folder that travels with the working
# tree, and this script installs it from there:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml-collections==1.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device_out}
mkdir -p "$out"
python=${PYTHON:-python3}
if [ -d .whl ] && ! "$python" -c "import ml_collections" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/robult_site .whl/*.whl
  export PYTHONPATH=/tmp/robult_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
"$python" -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"
for dtype in float32 bfloat16; do
  "$python" experiments/benchmark.py --synthetic-inputs --datasets watch \
    --architectures paper,fused --batch-sizes "${BATCH_SIZES:-128,512,2048,8192}" --dtype "$dtype" \
    --repeats 3 --target-seconds 0.3 --modalities '' --no-torch \
    --output "$out/bench_$dtype.json" 2>&1 | tee "$out/bench_$dtype.log"
done
