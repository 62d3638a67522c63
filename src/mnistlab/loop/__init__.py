"""The training loop: Progress, the five-step epoch (step), fit (epochs, stopping, best, test),
pruning, signals.
May import parts, data, config, names; never run, sweep or report."""
