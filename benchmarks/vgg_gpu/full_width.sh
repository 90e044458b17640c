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
# BUDGET_S (seconds for both runs together; 500), OUT, WORK.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vgg-full-width-out}
WORK=${WORK:-/tmp/vgg-full-width}
source benchmarks/gpu/device_env.sh

RECIPE=benchmarks/vgg_gpu/full_width_recipe.py
ARGS=(--config "$RECIPE" --no-progress --no-epoch-checkpoints "${DATA_ARGS[@]}")
if [ "${SMOKE:-0}" = 1 ]; then
  # Width 1/16 on 1,024 training images: every stage runs, in a minute or two on a CPU.
  ARGS+=(--width 0.0625 --train-subset 1024 --validation-size 512 --test-subset 512)
  DENSE_EPOCHS=${DENSE_EPOCHS:-2} ROUNDS=${ROUNDS:-2} RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-1}
fi
[ -n "${DENSE_EPOCHS:-}" ] && ARGS+=(--dense-epochs "$DENSE_EPOCHS")
PRUNE_ARGS=()
[ -n "${ROUNDS:-}" ] && PRUNE_ARGS+=(--rounds "$ROUNDS")
[ -n "${RETRAIN_EPOCHS:-}" ] && PRUNE_ARGS+=(--retrain-epochs "$RETRAIN_EPOCHS")

rm -rf "$WORK"
echo "== dense: prune_vgg.py ${ARGS[*]} --rounds 0 --workdir $WORK/dense"
timeout "$(seconds_left)" $PYTHON scripts/prune_vgg.py "${ARGS[@]}" --rounds 0 \
  --workdir "$WORK/dense"
echo "dense rc=$? after $(($(date +%s) - STARTED)) s"
if [ -f "$WORK/dense/report.json" ]; then
  echo "== pruned: prune_vgg.py ${ARGS[*]} ${PRUNE_ARGS[*]} --from-dense $WORK/dense" \
    "--workdir $WORK/pruned"
  timeout "$(seconds_left)" $PYTHON scripts/prune_vgg.py "${ARGS[@]}" "${PRUNE_ARGS[@]}" \
    --from-dense "$WORK/dense" --workdir "$WORK/pruned"
  echo "pruned rc=$? after $(($(date +%s) - STARTED)) s"
fi
save_records
