#!/usr/bin/env bash
# scripts/gpu_check.sh [MNIST folder]     the checks that need a CUDA GPU, in a few minutes
# The cuda-marked tests, the lesson's 10000x10000 matmul, the training benchmark, and the
# speed-run preset on device=cuda in bf16 and 16-mixed (float16 with loss scaling).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${MNISTLAB_DATA:-../shared/data/mnist}}"
python=${PYTHON:-python}
out=$(mktemp -d)
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
"$python" -m pytest -m cuda -q
"$python" -m mnistlab.benchmark device=cuda 'benchmark.sizes=[10000]' hydra.run.dir="$out/matmul"
"$python" -m mnistlab.benchmark device=cuda benchmark=training hydra.run.dir="$out/training"
for precision in bf16 16-mixed; do
  "$python" -m mnistlab.cli.train experiment=mnist_speedrun device=cuda loop.precision=$precision \
    dataset.source.root="$data" dataset.source.download=false hydra.run.dir="$out/speedrun_$precision"
  cat "$out/speedrun_$precision/metrics.json"
done
