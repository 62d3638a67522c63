"""mnistlab-benchmark: the lesson's CPU-versus-GPU matmul, and how fast our training loop is.

mnistlab-benchmark                                   # matmul at the default sizes, float32
mnistlab-benchmark 'benchmark.sizes=[10000]'         # the lesson's experiment exactly
mnistlab-benchmark 'benchmark.dtypes=[float32,float64,bfloat16,float16]'
mnistlab-benchmark benchmark=training                # lesson loop vs mnistlab loop vs bare loop
mnistlab-benchmark -m benchmark=training benchmark.batch_size=32,64,256
mnistlab-benchmark benchmark=time_to_accuracy        # experiment=mnist_speedrun to 99.0% test
mnistlab-benchmark benchmark=time_to_accuracy 'benchmark.overrides=["loop.seed=1"]'
"""
