"""joblib's internals (joblib 1.x, capped below 2): the worker pool its launcher used."""

import sys
from typing import Any

POOL_MODULE = "joblib.externals.loky.reusable_executor"


def idle_pool() -> Any:
    """The loky pool joblib's launcher left running in this process, if any (None otherwise).

    Read without importing joblib: a process that ran no joblib sweep has none.
    """
    loky = sys.modules.get(POOL_MODULE)
    return None if loky is None else getattr(loky, "_executor", None)
