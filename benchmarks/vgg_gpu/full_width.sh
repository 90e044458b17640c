#!/bin/bash
# Issue 12, item 4: full-width VGG-16-CIFAR (batch norm, bf16) on one H200, in one device call:
# dense training, then Han et al.'s alternating FC/CONV rounds from that dense network
# (scripts/prune_vgg.py --from-dense), recipe in full_width_recipe.py. Targets: dense <= 7.5 %
# test error; pruned >= 15x fewer weights at <= +0.3 points.
#
# On the GPU machine (from the repository root; .whl holds the wheels of grain, array_record,
# tensorflow-datasets and their dependencies missing there, .gpu/ a copy of
# ../shared/datasets/cifar10-jpeg.tar.gz; both ignored through .git/info/exclude):
#   run(command='bash benchmarks/vgg_gpu/full_width.sh', carry=['.whl', '.gpu'], timeout_s=560)
# It writes run.log and runs.tar.gz (both work directories, checkpoints left out) to $OUT;
# unpack them and summarise with benchmarks/vgg_cifar_results.py --dense ... --pruned ... .
#
# On a CPU, the same pipeline at a tiny size (a check of the script, not a result):
#   SMOKE=1 bash benchmarks/vgg_gpu/full_width.sh
#
# Environment: DENSE_EPOCHS, ROUNDS, RETRAIN_EPOCHS (the recipe's 60, 4, 5 otherwise),
# BUDGET_S (seconds for both runs together; 500), RAW (the CIFAR-10 archive), OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vgg-full-width-out}
WORK=${WORK:-/tmp/vgg-full-width}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

PYTHON=python3
if [ -x .venv/bin/python ]; then  # here: the project's environment
  PYTHON=.venv/bin/python
elif [ -d .whl ]; then  # on the GPU machine: its python3, plus the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1

RECIPE=benchmarks/vgg_gpu/full_width_recipe.py
ARGS=(--config "$RECIPE" --no-progress --no-epoch-checkpoints)
if [ -f .gpu/cifar10-jpeg.tar.gz ]; then
  ARGS+=(--raw-data .gpu/cifar10-jpeg.tar.gz --data-dir /tmp/tfds)
fi
if [ "${SMOKE:-0}" = 1 ]; then
  # Width 1/16 on 512 training images: every stage runs, in a minute or two on a CPU.
  ARGS+=(--width 0.0625 --train-subset 1024 --validation-size 512 --test-subset 512)
  DENSE_EPOCHS=${DENSE_EPOCHS:-2} ROUNDS=${ROUNDS:-2} RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-1}
fi
[ -n "${DENSE_EPOCHS:-}" ] && ARGS+=(--dense-epochs "$DENSE_EPOCHS")
PRUNE_ARGS=()
[ -n "${ROUNDS:-}" ] && PRUNE_ARGS+=(--rounds "$ROUNDS")
[ -n "${RETRAIN_EPOCHS:-}" ] && PRUNE_ARGS+=(--retrain-epochs "$RETRAIN_EPOCHS")

command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PYTHON -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" || exit 1
git rev-parse HEAD 2> /dev/null || echo 'no git metadata: the commit is the one sent'

rm -rf "$WORK"
start=$(date +%s)
deadline=$((start + ${BUDGET_S:-500}))
echo "== dense: prune_vgg.py ${ARGS[*]} --rounds 0 --workdir $WORK/dense"
timeout $((deadline - $(date +%s))) $PYTHON scripts/prune_vgg.py "${ARGS[@]}" --rounds 0 \
  --workdir "$WORK/dense"
echo "dense rc=$? after $(($(date +%s) - start)) s"
if [ -f "$WORK/dense/report.json" ]; then
  echo "== pruned: prune_vgg.py ${ARGS[*]} ${PRUNE_ARGS[*]} --from-dense $WORK/dense" \
    "--workdir $WORK/pruned"
  timeout $((deadline - $(date +%s))) $PYTHON scripts/prune_vgg.py "${ARGS[@]}" "${PRUNE_ARGS[@]}" \
    --from-dense "$WORK/dense" --workdir "$WORK/pruned"
  echo "pruned rc=$? after $(($(date +%s) - start)) s"
fi
# The runs' records, not their checkpoints (tens of MB each): reports, configs, metrics, plots.
(cd "$(dirname "$WORK")" && find "$(basename "$WORK")" -maxdepth 2 -type f \( -name '*.json' \
  -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \) | sort | tar -czf "$OUT/runs.tar.gz" -T - -v)
