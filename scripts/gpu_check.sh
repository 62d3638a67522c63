#!/usr/bin/env bash
# scripts/gpu_check.sh [MNIST folder]     the checks that need a CUDA GPU, in a few minutes
# The cuda-marked tests, the lesson's 10000x10000 matmul, the training benchmark, and the
# speed-run preset on device=cuda as shipped (loop.precision=auto: bf16 where the GPU computes
# it natively), then in 16-mixed (float16 with loss scaling) and 32. Each benchmark prints the
# machine's other load and marks figures taken under load.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${MNISTLAB_DATA:-../shared/data/mnist}}"
python=${PYTHON:-python}
out=$(mktemp -d)
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
"$python" -m pytest -m cuda -q
"$python" -m mnistlab.benchmark device=cuda 'benchmark.sizes=[10000]' hydra.run.dir="$out/matmul"
"$python" -m mnistlab.benchmark device=cuda benchmark=training hydra.run.dir="$out/training"
for precision in auto 16-mixed 32; do
  "$python" -m mnistlab.cli.train experiment=mnist_speedrun device=cuda loop.precision=$precision \
    dataset.source.root="$data" dataset.source.download=false hydra.run.dir="$out/speedrun_$precision"
  grep -E '"(test_accuracy|target_seconds|wall_time_s|precision|precision_reason|device)"' \
    "$out/speedrun_$precision/metrics.json"
done
echo "gpu_check: all done; the runs' folders are in $out"
