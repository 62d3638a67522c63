"""The shipped config options (conf/<group>/<option>.yaml), read as plain values.

For code that needs an option's values outside a composed run: a checkpoint saved before a
group existed, the benchmark's optimizer. The YAML files are the one source of defaults.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnistlab.names import CONF_DIR


def options(group: str) -> list[str]:
    """The shipped options of a group, by name: conf/<group>/*.yaml."""
    return sorted(path.stem for path in (Path(CONF_DIR) / group).glob("*.yaml"))


def option(group: str, name: str) -> DictConfig:
    """conf/<group>/<name>.yaml without its defaults list (the schema it names adds no value)."""
    node = OmegaConf.load(Path(CONF_DIR) / group / f"{name}.yaml")
    node.pop("defaults", None)
    return node
