"""Hydra's Optuna sweeper, made resumable: the study lives in a database, trials keep their jobs.

Re-running the same sweep into its folder (`hydra.sweep.dir=<that sweep>`) continues it to its
total `n_trials`: trials that finished (complete, pruned, failed) count; trials an interrupt
left running are launched again with their own parameters, job number and folder (the job
resumes from its checkpoint); new trials get the next numbers. Job number == trial number.
A job that a signal stopped (SystemExit in the sweep's process, interrupt.JobInterrupted from
a joblib worker) ends the sweep and leaves its trial running, so that it resumes; only a job
that raised an error is told as failed.
Loaded only by hydra_plugins.mnistlab_optuna, once the sweep starts (it imports optuna).
"""

import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.samplers import GridSampler
from optuna.trial import FrozenTrial, TrialState

from mnistlab import SettingError
from mnistlab.files import write_text
from mnistlab.names import HIGHER_IS_BETTER, PRUNED, recorded_metrics
from mnistlab.private import hydra as hydra_private
from mnistlab.private import optuna as optuna_private
from mnistlab.private.optuna import OptunaSweeperImpl, create_params_from_overrides
from mnistlab.run import guard
from mnistlab.sweep import interrupt, optuna_study
from mnistlab.sweep.interrupt import JobInterrupted

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
Job = tuple[int, tuple[str, ...]]  # a trial's number (= job number) and the job's overrides


class ResumableSweeperImpl(OptunaSweeperImpl):
    """OptunaSweeperImpl whose study resumes to n_trials and tells pruned jobs as PRUNED."""

    def __init__(self, *args: Any, pruner: Any = None) -> None:
        super().__init__(*args)
        self.pruner = pruner  # built from the current config; jobs build their own from it

    def sweep(self, arguments: list[str]) -> None:
        """Run the trials still missing from the study, then write the best one."""
        with guard.refusal():  # one line, before any job
            self.check_settings()
            space, fixed = self.distributions(arguments)
            study = self.open_study()
            interrupted = [t for t in study.trials if t.state == TrialState.RUNNING]
            again = [self.again(trial, space, fixed) for trial in interrupted]
        done = sum(trial.state in FINISHED for trial in study.trials)
        log.info("Study %s in %s: %d of %d trials done", study.study_name, self.url(), done,
                 self.n_trials)  # fmt: skip
        if study.trials:
            # A seeded sampler would start its random draws again from the seed and repeat the
            # first trials' values; a resumed search differs from an uninterrupted one anyway.
            self.sampler.reseed_rng()
        for batch in self.batches(study, again, space, fixed):
            returns = self.launcher.launch([ov for _, ov in batch], initial_job_idx=batch[0][0])
            self.tell_all(study, batch, returns)
        self.write_best(study)

    def check_settings(self) -> None:
        """What this sweeper cannot do with its settings, before the study is opened."""
        if self.custom_search_space_extender is not None:
            raise SettingError(
                "hydra.sweeper.custom_search_space: not supported by a resumable sweep (its "
                "trials could not be checked on resume); set it to null"
            )
        if self.study_name is None:
            raise SettingError(
                "hydra.sweeper.study_name is null: a study is found again by its name; set "
                "one, e.g. hydra.sweeper.study_name=lr_search"
            )
        check_direction(self.config.objective, self._get_directions())

    def distributions(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict]:
        """The distributions searched and the fixed settings, as Hydra's sweeper reads them."""
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(),
                                                     *arguments])  # fmt: skip
        space = {**(self.search_space_distributions or {}), **space}
        if isinstance(self.sampler, functools.partial) and self.sampler.func == GridSampler:
            grid = {name: self._to_grid_sampler_choices(dist) for name, dist in space.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, functools.reduce(lambda n, v: n * len(v),
                                                                grid.values(), 1))  # fmt: skip
        return {k: v for k, v in space.items() if k not in fixed}, fixed

    def url(self) -> str:
        return optuna_study.storage_url(self.storage, self.sweep_dir)

    def open_study(self) -> optuna.Study:
        """The sweep's study, created or loaded; a plain RDBStorage, shared with the jobs."""
        if self.storage is None:
            Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        return optuna.create_study(
            study_name=self.study_name,
            storage=optuna.storages.RDBStorage(self.url()),
            sampler=self.sampler,
            pruner=self.pruner,
            directions=self._get_directions(),
            load_if_exists=True,
        )

    def batches(
        self, study: optuna.Study, again: list[Job], space: dict, fixed: dict
    ) -> Iterator[list[Job]]:
        """Interrupted trials again, then new ones up to n_trials; n_jobs, numbered in a row."""
        for start in range(0, len(again), self.n_jobs):
            yield from in_a_row(again[start : start + self.n_jobs])
        while (left := self.n_trials - sum(t.state in FINISHED for t in study.trials)) > 0:
            trials = [study.ask() for _ in range(min(left, self.n_jobs))]
            self._configure_trials(trials, space, fixed)  # suggests each trial's values
            yield from in_a_row([(t.number, overrides(t.params, space, fixed)) for t in trials])

    def again(self, trial: FrozenTrial, space: dict, fixed: dict) -> Job:
        """An interrupted trial's job, its values checked against this sweep's search space."""
        params = trial.params  # values only: each must lie in this sweep's own distributions
        if set(params) != set(space) or not all(within(space[k], params[k]) for k in space):
            raise SettingError(
                f"hydra.sweep.dir={self.sweep_dir}: trial {trial.number} of study "
                f"{self.study_name} has {params}, outside this sweep's search space "
                f"{sorted(space)}: resume it with the sweep's own settings, or choose another "
                "hydra.sweep.dir"
            )
        return trial.number, overrides(params, space, fixed)

    def tell_all(self, study: optuna.Study, batch: list[Job], returns: Sequence[JobReturn]):
        """Tell each job's result; stop the sweep after a signal, or past max_failure_rate."""
        ended = [(number, ret) for (number, _), ret in zip(batch, returns, strict=True)]
        stopped = [hydra_private.returned(ret) for _, ret in ended if signalled(ret)]
        ended = [(number, ret) for number, ret in ended if not signalled(ret)]
        failures = [ret for number, ret in ended if not tell(study, number, ret)]
        if stopped:  # their trials stay running, to be continued by a re-run
            interrupt.job_interrupted(stopped[0].signum)
        if failures and len(failures) / len(ended) > self.max_failure_rate:
            for ret in failures:
                _ = ret.return_value  # raises a job's own error, with its traceback
            raise RuntimeError(
                f"{len(failures)} of {len(returns)} trials returned no number per direction "
                f"(hydra.sweeper.max_failure_rate={self.max_failure_rate})"
            )

    def write_best(self, study: optuna.Study) -> None:
        """optimization_results.yaml in the sweep folder, as Hydra's sweeper writes it."""
        if not any(t.state == TrialState.COMPLETE for t in study.trials):
            log.warning("no trial completed: no best trial")
            return
        if len(study.directions) > 1:
            best: dict = {"solutions": [{"params": t.params, "values": t.values}
                                        for t in study.best_trials]}  # fmt: skip
        else:
            best = {"best_params": study.best_params, "best_value": study.best_value}
            log.info("Best parameters: %s", study.best_params)
            log.info("Best value: %s", study.best_value)
        path = Path(self.sweep_dir) / "optimization_results.yaml"
        write_text(path, OmegaConf.to_yaml(OmegaConf.create({"name": "optuna", **best})))


def check_direction(objective: str, directions: list[str]) -> None:
    """Refuse to minimise an accuracy or maximise a loss (the objective the jobs return)."""
    wanted = "maximize" if objective in HIGHER_IS_BETTER else "minimize"
    if len(directions) == 1 and directions[0].lower() != wanted:
        raise SettingError(
            f"hydra.sweeper.direction={directions[0]} with objective={objective}: set "
            f"hydra.sweeper.direction={wanted}, or choose another objective"
        )


def overrides(params: dict[str, Any], space: dict, fixed: dict) -> tuple[str, ...]:
    """A trial's job overrides, in the search space's order (the job folder's name follows it)."""
    values = {**{name: params[name] for name in space}, **fixed}
    return tuple(f"{name}={value}" for name, value in values.items())


def within(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` is one that `distribution` can give."""
    try:
        return optuna_private.contains(distribution, value)
    except (TypeError, ValueError):  # e.g. a choice that is not among the choices
        return False


def in_a_row(jobs: list[Job]) -> Iterator[list[Job]]:
    """Split jobs into runs of consecutive numbers: a launch numbers its jobs from the first."""
    start = 0
    for i in range(1, len(jobs) + 1):
        if i == len(jobs) or jobs[i][0] != jobs[i - 1][0] + 1:
            yield jobs[start:i]
            start = i


def signalled(ret: JobReturn) -> bool:
    """Whether a job of a pooled sweep (joblib) stopped on a signal rather than failing."""
    error = hydra_private.returned(ret)
    return ret.status == JobStatus.FAILED and isinstance(error, JobInterrupted)


def tell(study: optuna.Study, number: int, ret: JobReturn) -> bool:
    """Tell the study how trial `number` ended (PRUNED per metrics.json); False: it failed."""
    if ret.status == JobStatus.FAILED:
        log.warning("trial %d failed: %s", number, hydra_private.returned(ret))
        finish(study, number, None, TrialState.FAIL)
        return False
    if job_status(ret) == PRUNED:
        finish(study, number, None, TrialState.PRUNED)
        return True
    values = ret.return_value if len(study.directions) > 1 else [ret.return_value]
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError) as err:
        log.warning("trial %d returned %r, not a number per direction: %s", number, values, err)
        finish(study, number, None, TrialState.FAIL)
        return False
    finish(study, number, numbers, TrialState.COMPLETE)
    return True


def finish(study: optuna.Study, number: int, values: list[float] | None, state: TrialState):
    """study.tell; the grid sampler's "Study.stop" outside optimize() is no error here."""
    try:
        study.tell(number, values, state=state)
    except RuntimeError as err:  # the state is stored before the sampler's after_trial raises
        if "Study.stop" not in str(err):
            raise


def job_status(ret: JobReturn) -> str | None:
    """The `status` in the job's metrics.json (read as a value), if it wrote one."""
    metrics = recorded_metrics(Path(ret.hydra_cfg.hydra.runtime.output_dir)) or {}
    return metrics.get("status")
