"""Sweeps: the sweep context, its record, re-run (reuse/resume/fresh), stopping, naming, Optuna,
SLURM.
May import run and everything below it; never report or cli."""
