"""OmegaConf's internals that mnistlab uses (omegaconf 2.3; capped below 2.4)."""

from typing import Any

from omegaconf import DictConfig, ListConfig

from mnistlab.private import require


def child(node: DictConfig | ListConfig, key: Any) -> Any:
    """The child node at `key`, unresolved: an interpolation stays one (`node[key]` resolves)."""
    return require(node, "_get_node", "omegaconf")(key)
