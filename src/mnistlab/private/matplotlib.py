"""matplotlib's internals (matplotlib 3.x, capped below 4), for figures drawn without pyplot."""

from typing import Any

from mnistlab.private import require


def log_scale(axis: Any) -> None:
    """Set one axis (`axes.xaxis`) to a log scale without the Axes method that needs pyplot."""
    require(axis, "_set_axes_scale", "matplotlib")("log")
