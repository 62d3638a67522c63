"""mnistlab: a small Hydra-configured PyTorch experiment harness."""

from hydra.errors import CompactHydraException


class SettingError(CompactHydraException):
    """A bad setting: Hydra prints the message as one line, without a traceback."""
