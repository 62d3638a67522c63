"""The private APIs of other libraries that mnistlab relies on, one small module per library.

Each use is named here and tested (tests/test_private.py), so that an upgrade that removes one
fails with a message naming it, not deep inside a run; pyproject.toml caps each library's
version. May import nothing of mnistlab but `require` below; every layer may import these.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any


def require(owner: Any, name: str, package: str) -> Any:
    """`owner.name`, or an ImportError naming what is missing and the version that has it."""
    try:
        return getattr(owner, name)
    except AttributeError:
        try:
            found = version(package)
        except PackageNotFoundError:
            found = "not installed"
        raise ImportError(
            f"mnistlab uses {getattr(owner, '__name__', owner)}.{name}, which {package} "
            f"{found} lacks: install the version pyproject.toml names"
        ) from None
