#!/bin/bash
# GPU evidence: a full-width VGG-16 (batch norm) pruned on CIFAR-10, bf16, choices on validation.
# (Recorded as it ran: from .gpu/run.sh in the repository root on the GPU machine, with .whl/ holding
# the wheels of grain, array_record, tensorflow-datasets and their missing dependencies, and
# .gpu/cifar10-jpeg.tar.gz a copy of ../shared/datasets/cifar10-jpeg.tar.gz.)
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import jax, flax, grain, tensorflow_datasets as t; print('jax', jax.__version__, 'flax', flax.__version__, 'tfds', t.__version__, jax.devices())"
timeout "${BUDGET:-380}" python3 scripts/prune_vgg.py --model vgg16_cifar --batch-norm --dtype bfloat16 \
  --validation-size 5000 --raw-path .gpu/cifar10-jpeg.tar.gz --data-dir /tmp/tfds \
  --workdir /tmp/vgg16-cifar-gpu --dense-epochs 10 --rounds 3 --retrain-epochs 2 \
  --input-workers 12 --no-progress --no-epoch-checkpoints
echo "prune_vgg rc=$?"
cd /tmp/vgg16-cifar-gpu && cp -v config.json metrics.jsonl report.md report.json error_vs_kept.png "$OUT/" 2>&1 | tail -5
