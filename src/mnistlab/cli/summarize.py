"""mnistlab-summarize: rebuild a sweep's summary.csv, summary.md and report.html from its folder.

mnistlab-summarize outputs/sweeps/<time>     # (re)build summary.csv, summary.md, report.html
mnistlab-summarize <sweep> <sweep> ...       # and one report.html comparing them
mnistlab-summarize outputs/sweeps            # every sweep folder below it, compared

Everything is rebuilt from the job folders, so it works on any sweep: finished, failed or
stopped. Kept free of torch, so that the command starts in a blink.
"""

import argparse
import os
import sys
from pathlib import Path

from mnistlab import names
from mnistlab.report.callback import hparams_experiment, print_report
from mnistlab.report.jobs import Job, find_jobs
from mnistlab.report.summary import write_summary


def main(argv: list[str] | None = None) -> None:
    """mnistlab-summarize <sweep dir> [<sweep dir> ...]: rebuild summaries and report.html."""
    try:
        summarize(argv)
    except BrokenPipeError:  # `mnistlab-summarize x | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(1)


def summarize(argv: list[str] | None) -> None:
    """Parse the command line; write and print each sweep's summary, then the report."""
    parser = argparse.ArgumentParser(prog="mnistlab-summarize", description=main.__doc__)
    parser.add_argument(
        "sweep_dirs", nargs="+", type=Path, help="e.g. outputs/sweeps/2024-05-01_12-00-00_0"
    )
    parser.add_argument(
        "--group-over",
        default="loop.seed",
        metavar="KEY",
        help="a swept key to fold into mean ± std per configuration (default: loop.seed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the report (default: report.html in the sweep folder, or beside "
        "the first sweep's folder when several are compared)",
    )
    args = parser.parse_args(argv)
    found: dict[Path, list[Job]] = {}
    for given in args.sweep_dirs:
        found |= sweeps_in(parser, given)
    if not found:
        parser.error("no sweep folder given: only files mnistlab wrote itself")
    for sweep_dir, jobs in found.items():
        print(write_summary(sweep_dir, jobs), flush=True)
    folders = list(found)
    out = args.out or report_folder(args.sweep_dirs, folders) / names.REPORT_FILE
    print_report(folders, out, args.group_over)
    # TensorBoard's HParams over all of them: the objective first, and the settings that differ
    # between any two jobs marked so. TensorBoard shows one experiment of those below its
    # --logdir, any one: each compared sweep, and the report's folder, get the same.
    every = [job for jobs in found.values() for job in jobs]
    for folder in dict.fromkeys([*folders, out.parent]):
        hparams_experiment(folder, every)
    if all(job.status == names.UNREADABLE for jobs in found.values() for job in jobs):
        sys.exit("mnistlab-summarize: no job folder could be read: the table gives each reason")


def report_folder(given: list[Path], folders: list[Path]) -> Path:
    """Where report.html goes: in the sweep's folder; for several, in the one parent folder
    named, else beside the first sweep."""
    if len(folders) == 1:
        return folders[0]
    if len(given) == 1 and given[0] not in folders:
        return given[0]
    return folders[0].parent


# What mnistlab-summarize and a sweep write beside job folders: passed on (`outputs/sweeps/*`).
OWN_FILES = (names.REPORT_FILE, names.SUMMARY_CSV, names.SUMMARY_MD, names.REPORT_STAMP_FILE)


def sweeps_in(parser: argparse.ArgumentParser, given: Path) -> dict[Path, list[Job]]:
    """The sweep `given` is, or else the sweeps directly below it, with their jobs; nothing
    for a file mnistlab wrote itself; a one-line error (exit 2) for anything else."""
    try:
        if given.name in OWN_FILES and given.is_file():
            print(f"{given}: written by mnistlab, not a sweep: passed over", file=sys.stderr)
            return {}
        if not given.is_dir():
            parser.error(f"{given} is not a folder")
        jobs = find_jobs(given)
        if jobs:
            return {given: jobs}
        found = {folder: find_jobs(folder) for folder in sweeps_below(given, DEPTH)}
    except OSError as error:  # a folder this user may not enter or list
        parser.error(f"{given} cannot be read: {error.strerror}")
    found = {folder: jobs for folder, jobs in found.items() if jobs}
    if not found:
        parser.error(
            f"{given} holds no Hydra job folders (*/.hydra/hydra.yaml), nor sweep folders "
            f"({names.HYDRA_SWEEP_FILE}) up to {DEPTH} levels below it"
        )
    print(f"{given}: {len(found)} sweep folder{'s' * (len(found) > 1)} below it", file=sys.stderr)
    return found


DEPTH = 3  # outputs/ -> sweeps/ -> <time>/: how far below a named folder sweeps are looked for


def sweeps_below(folder: Path, depth: int) -> list[Path]:
    """The sweep folders (Hydra's multirun.yaml or mnistlab's sweep.yaml in them) below
    `folder`, up to `depth` levels down, in name order; links are not followed."""
    found = []
    for inner in sorted(folder.iterdir()):
        if inner.is_symlink() or not inner.is_dir():
            continue
        if (inner / names.HYDRA_SWEEP_FILE).is_file() or (
            inner / names.SWEEP_RECORD_FILE
        ).is_file():
            found.append(inner)
        elif depth > 1:
            found += sweeps_below(inner, depth - 1)
    return found


if __name__ == "__main__":
    main()
