"""mnistlab-diff: what differs between two runs, in their settings and in where they came from.

mnistlab-diff outputs/runs/<a> outputs/runs/<b>
mnistlab-diff outputs/sweeps/<time>/<job a> outputs/sweeps/<time>/<job b>

Prints the settings (.hydra/config.yaml) and the provenance fields (provenance.json, start
times aside) whose values differ, nothing else. Kept free of torch: it starts in a blink.
"""

import argparse
import os
import sys
from pathlib import Path

from mnistlab.names import PROVENANCE_FILE
from mnistlab.report.compare import NotARun, Recorded, differences, read_run, shown


def main(argv: list[str] | None = None) -> None:
    """mnistlab-diff RUN_A RUN_B: the settings and provenance that differ between two runs."""
    try:
        compare(argv)
    except BrokenPipeError:  # `mnistlab-diff a b | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(1)


def compare(argv: list[str] | None) -> None:
    """Parse the command line, read both runs, print what differs."""
    parser = argparse.ArgumentParser(prog="mnistlab-diff", description=main.__doc__)
    parser.add_argument("run_a", type=Path, help="a run folder (or a sweep's job folder)")
    parser.add_argument("run_b", type=Path, help="the run folder to compare it with")
    args = parser.parse_args(argv)
    try:
        a, b = read_run(args.run_a), read_run(args.run_b)
    except NotARun as error:
        parser.exit(2, f"mnistlab-diff: {shown(str(error))}\n")
    print(f"A: {shown(str(a.folder))}\nB: {shown(str(b.folder))}")
    settings = differences(a.settings, b.settings)
    print(section("settings", settings) if settings else "settings: the same")
    print(provenance_section(a, b))


def provenance_section(a: Recorded, b: Recorded) -> str:
    """The provenance lines: what differs, or which run has none recorded."""
    missing = [name for name, run in (("A", a), ("B", b)) if run.provenance is None]
    if missing:
        return f"provenance: {' and '.join(missing)} recorded none (no {PROVENANCE_FILE})"
    found = differences(a.provenance or {}, b.provenance or {})
    return section("provenance", found) if found else "provenance: the same (start times aside)"


WIDE = 32  # characters: a longer value goes on a line of its own


def section(title: str, rows: list[tuple[str, object, object]]) -> str:
    """`title:` then each key with A's and B's values: in columns, or on lines of their own
    where a value is long (a command line, a hash)."""
    cells = [(key, shown(left), shown(right)) for key, left, right in rows]
    short = [cell for cell in cells if max(len(cell[1]), len(cell[2])) <= WIDE]
    key_width = max((len(key) for key, _, _ in short), default=0)
    a_width = max((len(left) for _, left, _ in short), default=0)
    lines = [f"{title} (key, A, B):"]
    for key, left, right in cells:
        if (key, left, right) in short:
            lines.append(f"  {key:<{key_width}}  {left:<{a_width}}  {right}")
        else:
            lines += [f"  {key}", f"    A: {left}", f"    B: {right}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
