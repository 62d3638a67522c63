"""Two runs side by side: their settings (Hydra's .hydra/config.yaml) and their provenance
(provenance.json), each flattened to dotted keys, and the keys whose values differ.

Read as any job folder is (mnistlab.files.read_inside: never through a link, never a FIFO,
bounded in size; plain YAML and JSON, nothing that chooses code). Kept free of torch.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnistlab.files import Refused, load_yaml, read_inside
from mnistlab.names import PROVENANCE_FILE
from mnistlab.run.provenance import flat

# Left out of a comparison: it differs between any two runs, and says nothing about why their
# results do.
UNCOMPARED = ("started",)
ABSENT = object()  # a key one of the runs does not have


class NotARun(ValueError):
    """A folder that holds no run to compare: the message says why, in one line."""


@dataclass(frozen=True)
class Recorded:
    """What a run folder records about the run: settings and provenance, as dotted keys."""

    folder: Path
    settings: dict[str, Any]
    provenance: dict[str, Any] | None  # None: none recorded (a run from before mnistlab did)


def read_run(folder: Path) -> Recorded:
    """The run in `folder`; NotARun where it is no run folder or its config cannot be read."""
    if not folder.is_dir():
        raise NotARun(f"{folder} is not a folder")
    try:
        config = load_yaml(read_inside(folder, ".hydra", "config.yaml"))
    except FileNotFoundError:
        raise NotARun(f"{folder} is not a run folder: it has no .hydra/config.yaml") from None
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise NotARun(f"{folder}/.hydra/config.yaml cannot be read: {first_line(error)}") from None
    if not isinstance(config, dict):
        raise NotARun(f"{folder}/.hydra/config.yaml holds no settings")
    return Recorded(folder, flat(config), provenance_of(folder))


def provenance_of(folder: Path) -> dict[str, Any] | None:
    """The run's provenance.json as dotted keys; None where there is none; a note if damaged."""
    try:
        found = json.loads(read_inside(folder, PROVENANCE_FILE))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as error:
        return {"note": f"{PROVENANCE_FILE} unreadable: {first_line(error)}"}
    if not isinstance(found, dict):
        return {"note": f"{PROVENANCE_FILE} holds no object"}
    return {key: value for key, value in flat(found).items() if key not in UNCOMPARED}


def first_line(error: Exception) -> str:
    """An error's message, one line (a YAML error's is several)."""
    lines = str(error).strip().splitlines()
    kind = "" if isinstance(error, Refused) else f"{type(error).__name__}: "
    return kind + (lines[0] if lines else "")


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every key whose values differ, `ABSENT` where missing."""
    keys = dict.fromkeys([*a, *b])
    pairs = ((key, a.get(key, ABSENT), b.get(key, ABSENT)) for key in keys)
    return [(key, left, right) for key, left, right in pairs if left != right]


def shown(value: Any) -> str:
    """A value on one line as YAML would write it; text with control characters as JSON."""
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, str):
        return value if value.isprintable() else json.dumps(value)
    return json.dumps(value)
