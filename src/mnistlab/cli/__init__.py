"""Entry points only: mnistlab-train (train), mnistlab-summarize, mnistlab-diff,
mnistlab-evaluate, mnistlab-predict, the Python API, process start/exit.
May import every folder below it: report, sweep, run, loop, parts, data, config, names."""
