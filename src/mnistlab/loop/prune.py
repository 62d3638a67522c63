"""Stop a sweep's hopeless jobs early (`sweep.prune`): the median rule and the divergence rule.

`rules` builds the hook that `mnistlab.loop.fit` calls after each epoch's validation (`Plan.prune`):
`(epochs done, that epoch's values) -> a reason, or None`. With a reason the run stops
there as `pruned`: checkpoint saved, `metrics.json` saying when and why. It can be resumed
to completion like an interrupted run. The rules look at epoch k = grace_epochs + 1 and later,
never at the last epoch (nothing would be saved):
- median (`sweep.prune.median`, in a sweep): stop when the job's best objective over epochs
  1..k is worse than the median, over the sweep's other *completed* jobs that reached epoch
  k (at least `min_jobs` of them), of their best over epochs 1..k. Only completed jobs count,
  as in Google Vizier's rule and Optuna's MedianPruner: a pruned job's curve is cut short
  where it looked worst, so counting it would pull the bar down toward the hopeless jobs.
  Best-so-far, not the value at k, so that one noisy epoch does not prune a good job.
- divergence (`sweep.prune.diverged`): stop when the validation accuracy is at chance: no
  more than a tenth of the way (CHANCE_SPAN) from `chance`, the accuracy of always guessing
  the validation split's most common class, to 100%. A non-finite loss stops the run at any
  step, grace or not (`loop.fit`, `Plan.prune_nonfinite`).
Other jobs are read from their `metrics.json` (`per_epoch`) as JSON values only; a damaged
or half-written file is skipped. Under several ranks only rank 0 reads them (`loop.fit`
makes the ranks agree). Kept free of torch.
"""

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from mnistlab.config.schemas import Prune
from mnistlab.names import COMPLETED, HIGHER_IS_BETTER, better, recorded_metrics

Hook = Callable[[int, dict[str, float]], str | None]
# On MNIST's validation split 11.6% + 8.8% = 20.5%. In the 9-job sweep of docs/sweeps.md
# Adam and RMSprop at lr 0.1 had 16.5% and 18.4% after their second epoch, and the slowest
# learner (SGD at lr 0.001) 79% after its first. Two points over chance caught neither.
CHANCE_SPAN = 0.1


def rules(
    settings: Prune,
    objective: str,
    history: dict[str, list[float]],
    chance: float,
    sweep: Path | None,
    folder: Path,
) -> Hook | None:
    """The hook for `Plan.prune`; None when no rule is on.

    `history` is the run's own `Progress.per_epoch` (fit adds each epoch before asking);
    `chance` the accuracy of always guessing the most common validation class; `sweep` the
    sweep folder whose other jobs the median rule reads (None: a single run, or a rank that
    leaves reading to rank 0); `folder` this job's own folder there.
    """
    if not settings.median and not settings.diverged:
        return None

    def check(epoch: int, values: dict[str, float]) -> str | None:
        if epoch <= settings.grace_epochs:
            return None
        if settings.diverged and at_chance(values["val_accuracy"], chance):
            return (
                f"val_accuracy {100 * values['val_accuracy']:.2f}% is at chance (always "
                f"guessing the most common class scores {100 * chance:.2f}%)"
            )
        if settings.median and sweep is not None:
            others = completed_curves(sweep, folder, objective)
            own = history.get(objective, [])[:epoch]
            return below_median(objective, own, others, settings.min_jobs)
        return None

    return check


def at_chance(accuracy: float, chance: float) -> bool:
    """Whether `accuracy` is no better than guessing: within CHANCE_SPAN of `chance`, the
    accuracy of always guessing the most common class (the divergence rule; the report's mark)."""
    return accuracy <= chance + CHANCE_SPAN * (1 - chance)


def either(*hooks: Hook | None) -> Hook | None:
    """One hook asking each of `hooks` in turn (None ones left out): the first reason wins."""
    present = [hook for hook in hooks if hook is not None]
    if not present:
        return None

    def check(epoch: int, values: dict[str, float]) -> str | None:
        return next((r for hook in present if (r := hook(epoch, values)) is not None), None)

    return check


def below_median(
    objective: str, own: list[float], others: list[list[float]], min_jobs: int
) -> str | None:
    """The median rule at epoch len(own): why the job is worse than the median, or None."""
    epoch = len(own)
    reached = [curve[:epoch] for curve in others if len(curve) >= epoch]
    if epoch == 0 or len(reached) < min_jobs:
        return None
    best = max if objective in HIGHER_IS_BETTER else min
    median = statistics.median(best(curve) for curve in reached)
    mine = best(own)
    if not better(objective, median, mine):
        return None
    return (
        f"best {objective} by epoch {epoch} {mine:.4g} is worse than the median {median:.4g} "
        f"of {len(reached)} completed jobs"
    )


def completed_curves(sweep: Path, folder: Path, objective: str) -> list[list[float]]:
    """`objective` at each epoch's end of every other completed job in the sweep folder."""
    curves = []
    for job in sorted(sweep.iterdir()):
        if job.name.startswith(".") or job.resolve() == folder.resolve() or not job.is_dir():
            continue
        metrics = recorded_metrics(job) or {}
        if metrics.get("status") != COMPLETED or not isinstance(metrics.get("per_epoch"), dict):
            continue
        curve = metrics["per_epoch"].get(objective)
        if isinstance(curve, list) and curve and all(finite(value) for value in curve):
            curves.append(curve)
    return curves


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
