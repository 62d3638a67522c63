"""mnistlab's Optuna sweeper (conf/hydra/sweeper/optuna_resumable.yaml); the logic is in
mnistlab.sweep.optuna_sweeper.

Hydra instantiates sweepers only from the `hydra_plugins` package, hence this module. It loads
without optuna: Hydra imports every module here on each start.
"""

from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # without the optuna extra there is nothing to extend (and no warning)
    OptunaSweeper = None

if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """Hydra's Optuna sweeper whose study resumes in its sweep folder and prunes trials."""

        def __init__(self, *, pruner: Any = None, **settings: Any) -> None:
            from mnistlab.sweep.optuna_sweeper import ResumableSweeperImpl

            names = ("sampler", "direction", "storage", "study_name", "n_trials", "n_jobs")
            names += ("max_failure_rate", "search_space", "custom_search_space", "params")
            self.sweeper = ResumableSweeperImpl(*(settings[n] for n in names), pruner=pruner)
