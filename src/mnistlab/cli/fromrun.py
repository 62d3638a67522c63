"""The command line of mnistlab-evaluate and mnistlab-predict: a run folder, `name=choice`
settings of the command itself (checkpoint=best|final, split=test|val), and overrides of the
run's dataset, device and precision, composed as mnistlab-train composes them.

No torch until `open_saved`: `--help` and a bad setting answer at once.
"""

import argparse
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mnistlab import SettingError, names
from mnistlab.cli import api


@dataclass(frozen=True)
class Command:
    """What the command line asks: its own choices, and the overrides of the run's config."""

    choices: dict[str, str]  # e.g. {"checkpoint": "best", "split": "test"}
    overrides: list[str]  # dataset=idx, dataset.source.root=..., device.name=cpu ...


def parser_of(prog: str, doc: str) -> argparse.ArgumentParser:
    """A command's parser: its module's docstring, the first paragraph as the description and
    the rest as the epilog; the run folder its first argument."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", type=Path, help="a run folder (or a sweep's job folder)")
    return parser


def read(prog: str, settings: Sequence[str], choices: Mapping[str, Sequence[str]]) -> Command:
    """Sort `settings` into the command's choices (the first option the default) and overrides."""
    found = {name: options[0] for name, options in choices.items()}
    overrides = []
    for setting in settings:
        key, equals, value = setting.partition("=")
        if key in choices:
            if value not in choices[key]:
                known = " or ".join(f"{key}={option}" for option in choices[key])
                fail(prog, f"{setting} is unknown: use {known}")
            found[key] = value
        elif not equals:
            fail(prog, f"{setting}: settings are KEY=VALUE (e.g. device.name=cpu)")
        else:
            overrides.append(setting)
    return Command(found, overrides)


def fail(prog: str, message: str) -> NoReturn:
    """One line on stderr, exit 2 (a bad command line)."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def one_line(prog: str) -> Iterator[None]:
    """A refused setting (or Hydra's refusal of an override) as one line, exit 2."""
    try:
        yield
    except (SettingError, HydraException, OmegaConfBaseException) as error:
        text = str(error).strip().splitlines()
        fail(prog, text[0] if text else type(error).__name__)


@contextmanager
def reader_gone() -> Iterator[None]:
    """`mnistlab-predict ... --out - | head`: the reader has all it wanted; no error at exit."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


def open_saved(folder: Path, choice: str, overrides: Sequence[str], config_dir: Path | None) -> Any:
    """The run's checkpoint `choice`, read and checked (mnistlab.run.saved), its config changed
    by `overrides`; `config_dir`: a config folder whose options the run may call."""
    path = checkpoint_path(folder, choice)  # before torch loads
    composing = [for_hydra(override) for override in overrides]
    composed = api.run_config(composing, config_dir)
    from mnistlab.run import resume, saved  # torch loads here

    sources = list(resume.DEFAULT_SOURCES)
    if config_dir is not None:
        sources.append(f"file://{config_dir.expanduser().resolve()}")
    return saved.open_run(path, choice, composed, overrides, sources)


RUN_FILES = (names.CHECKPOINT_FILE, names.BEST_FILE, names.METRICS_FILE)  # one is in any run


def checkpoint_path(folder: Path, choice: str) -> Path:
    """The checkpoint file `checkpoint=choice` names in the run `folder`, or one line saying why
    there is none."""
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder"
        raise SettingError(
            f"{folder}: {what}: give the run folder mnistlab-train wrote (outputs/runs/<time>, "
            "or a sweep's job folder)"
        )
    if not any((folder / name).exists() for name in RUN_FILES):
        raise SettingError(
            f"{folder} is not a run folder (it has no {', '.join(RUN_FILES)}): give the folder "
            "mnistlab-train wrote (outputs/runs/<time>, or a sweep's job folder)"
        )
    path = folder / names.CHECKPOINTS[choice]
    if path.is_file():
        return path
    others = [key for key, name in names.CHECKPOINTS.items() if (folder / name).is_file()]
    fix = f"use checkpoint={others[0]}" if others else "train it until it saves one"
    raise SettingError(f"checkpoint={choice}: {folder} has no {path.name}: {fix}")


def for_hydra(override: str) -> str:
    """A setting as Hydra composes it on the default groups: with `++`, where the default
    group's option may lack the key (dataset.source.root of a dataset=mnist run); a group's
    option (dataset=idx) and a setting given with its own `+` as they are."""
    name = override.partition("=")[0]
    return override if name.startswith("+") or "." not in name else f"++{override}"


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    """--config-dir, as mnistlab-train has it."""
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="a config folder of your own, as given to mnistlab-train --config-dir: the "
        "targets its options name may be called",
    )


CHECKPOINT_HELP = (
    f"checkpoint=best reads {names.BEST_FILE} (the default), "
    f"checkpoint=final {names.CHECKPOINT_FILE}"
)
