"""python -m mnistlab.benchmark: the same as the mnistlab-benchmark command."""

# The imported module's entry point, not a __main__ copy: launchers pickle it by reference.
from mnistlab.benchmark.job import main

main()
