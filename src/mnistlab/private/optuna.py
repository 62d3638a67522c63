"""Optuna's and hydra-optuna-sweeper's internals (optuna 2.10, capped below 3; the sweeper
1.2-1.3, capped below 1.4). Imported only by mnistlab's Optuna sweeper, with the extra."""

from typing import Any

import hydra_plugins.hydra_optuna_sweeper._impl as sweeper_impl
from optuna.distributions import BaseDistribution

from mnistlab.private import require

OptunaSweeperImpl = require(sweeper_impl, "OptunaSweeperImpl", "hydra-optuna-sweeper")
create_params_from_overrides = require(
    sweeper_impl, "create_params_from_overrides", "hydra-optuna-sweeper"
)


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `distribution` can give `value` (TypeError, ValueError where it cannot say)."""
    inside = require(distribution, "_contains", "optuna")
    return inside(distribution.to_internal_repr(value))
