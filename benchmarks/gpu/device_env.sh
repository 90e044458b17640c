# Sourced by the one-call device scripts (benchmarks/vgg_gpu/full_width.sh,
# benchmarks/gpu/structured.sh), from the repository root, after OUT and WORK are set.
# On the GPU machine it installs the carried wheels (.whl: grain, array_record,
# tensorflow-datasets and their dependencies missing there) and reads CIFAR-10 from the
# carried .gpu/cifar10-jpeg.tar.gz; here it uses .venv and the bundled data.
# Sets PYTHON and DATA_ARGS; defines seconds_left and save_records.
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
TEE_PID=$!
# At exit, close the log's pipe and let tee finish writing, so run.log comes back whole.
trap 'exec >&- 2>&-; wait "$TEE_PID"' EXIT

PYTHON=python3
if [ -x .venv/bin/python ]; then  # here: the project's environment
  PYTHON=.venv/bin/python
elif [ -d .whl ]; then  # on the GPU machine: its python3, plus the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1

DATA_ARGS=()
if [ -f .gpu/cifar10-jpeg.tar.gz ]; then
  DATA_ARGS=(--raw-data .gpu/cifar10-jpeg.tar.gz --data-dir /tmp/tfds)
fi

command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PYTHON -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" || exit 1
git rev-parse HEAD 2> /dev/null || echo 'no git metadata: the commit is the one sent'

STARTED=$(date +%s)
DEADLINE=$((STARTED + ${BUDGET_S:-500}))

# Seconds until the budget (BUDGET_S, 500 by default) is spent; at least 1, as `timeout 0`
# would mean no limit at all.
seconds_left() {
  local left=$((DEADLINE - $(date +%s)))
  echo $((left > 0 ? left : 1))
}

# Packs the records of the runs under WORK (reports, configs, metrics, plots; not their
# checkpoints) into $OUT/runs.tar.gz.
save_records() {
  (cd "$(dirname "$WORK")" && find "$(basename "$WORK")" -maxdepth 2 -type f \( -name '*.json' \
    -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \) | sort | tar -czf "$OUT/runs.tar.gz" -T - -v)
}
