#!/bin/bash
# Issue 14, item 5 (GPU part): ResNet-56 and the small ViT on CIFAR-10, bf16, on one H200, in one
# device call. For each model: dense training (scripts/prune_structured.py --rounds 0), then its
# structured recipe (scripts/configs/structured/<model>.py: whole channels, heads and MLP units
# removed over rounds) from that dense network (--from-dense). Then benchmarks/
# structured_results.py times the dense and the smaller model's forward pass on the GPU.
# Targets: >= 2x fewer MACs within +0.3 points of the model's own dense network; images/s of
# the smaller model against the dense one.
#
# On the GPU machine (carry as for benchmarks/vgg_gpu/full_width.sh, which says what .whl and
# .gpu hold):
#   run(command='bash benchmarks/gpu/structured.sh', carry=['.whl', '.gpu'], timeout_s=560)
# It writes run.log, runs.tar.gz (the work directories' records, no checkpoints) and
# structured_gpu.{json,md,png} (structured_results.py's tables) to $OUT.
#
# On a CPU, the same pipeline at a tiny size (a check of the script, not a result):
#   SMOKE=1 bash benchmarks/gpu/structured.sh
#
# Environment: MODELS (resnet56 vit_cifar), DENSE_EPOCHS (30), ROUNDS (2), RETRAIN_EPOCHS (5),
# BATCH (the timed forward pass's batch besides 1; 1024), BUDGET_S (seconds for all runs
# together; 500, shared evenly among the models still to run), OUT, WORK.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/structured-gpu-out}
WORK=${WORK:-/tmp/structured-gpu}
source benchmarks/gpu/device_env.sh

MODELS=(${MODELS:-resnet56 vit_cifar})
ARGS=(--dtype bfloat16 --validation-size 5000 --no-progress --no-epoch-checkpoints "${DATA_ARGS[@]}")
BATCH=${BATCH:-1024}
if [ "${SMOKE:-0}" = 1 ]; then
  # 1,024 training images and few epochs: every stage runs, in a few minutes on a CPU.
  ARGS=(--no-progress --no-epoch-checkpoints --train-subset 1024 --validation-size 512
    --test-subset 512)
  DENSE_EPOCHS=${DENSE_EPOCHS:-1} ROUNDS=${ROUNDS:-1} RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-1}
  BATCH=${BATCH_SMOKE:-8}
fi
ARGS+=(--dense-epochs "${DENSE_EPOCHS:-30}")
PRUNE_ARGS=(--rounds "${ROUNDS:-2}" --retrain-epochs "${RETRAIN_EPOCHS:-5}")

rm -rf "$WORK"
PRUNED=()
for i in "${!MODELS[@]}"; do
  model=${MODELS[$i]}
  share=$(($(seconds_left) / (${#MODELS[@]} - i)))  # this model's share of what is left
  until=$(($(date +%s) + share))
  echo "== $model dense: prune_structured.py --model $model ${ARGS[*]} --rounds 0" \
    "--workdir $WORK/$model-dense ($share s for this model)"
  timeout "$share" $PYTHON scripts/prune_structured.py --model "$model" "${ARGS[@]}" --rounds 0 \
    --workdir "$WORK/$model-dense"
  echo "$model dense rc=$? after $(($(date +%s) - STARTED)) s"
  [ -f "$WORK/$model-dense/report.json" ] || continue
  left=$((until - $(date +%s)))
  echo "== $model pruned: prune_structured.py --model $model ${ARGS[*]} ${PRUNE_ARGS[*]}" \
    "--from-dense $WORK/$model-dense --workdir $WORK/$model-pruned ($left s left)"
  timeout "$((left > 0 ? left : 1))" $PYTHON scripts/prune_structured.py --model "$model" \
    "${ARGS[@]}" "${PRUNE_ARGS[@]}" --from-dense "$WORK/$model-dense" --workdir "$WORK/$model-pruned"
  echo "$model pruned rc=$? after $(($(date +%s) - STARTED)) s"
  [ -d "$WORK/$model-pruned/pruned" ] && PRUNED+=("$WORK/$model-pruned")
done
save_records
if [ ${#PRUNED[@]} -gt 0 ]; then
  echo "== structured_results.py ${PRUNED[*]} --batches 1 $BATCH"
  $PYTHON benchmarks/structured_results.py "${PRUNED[@]}" --batches 1 "$BATCH" \
    --output "$OUT/structured_gpu"
fi
