"""Entry points only: mnistlab-train (train), mnistlab-summarize, the Python API, process
start/exit.
May import every folder below it: report, sweep, run, loop, parts, data, config, names."""
