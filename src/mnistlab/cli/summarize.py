"""mnistlab-summarize: rebuild a sweep's summary.csv, summary.md and report.html from its folder.

mnistlab-summarize outputs/sweeps/<time>     # (re)build summary.csv, summary.md, report.html
mnistlab-summarize <sweep> <sweep> ...       # and one report.html comparing them

Everything is rebuilt from the job folders, so it works on any sweep: finished, failed or
stopped. Kept free of torch, so that the command starts in a blink.
"""

import argparse
import os
import sys
from pathlib import Path

from mnistlab import names
from mnistlab.report.callback import print_report
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
    found = {sweep_dir: jobs_of(parser, sweep_dir) for sweep_dir in args.sweep_dirs}
    for sweep_dir, jobs in found.items():
        print(write_summary(sweep_dir, jobs), flush=True)
    first = args.sweep_dirs[0]
    folder = first if len(args.sweep_dirs) == 1 else first.parent
    default = folder / names.REPORT_FILE
    print_report(args.sweep_dirs, args.out or default, args.group_over)
    if all(job.status == names.UNREADABLE for jobs in found.values() for job in jobs):
        sys.exit("mnistlab-summarize: no job folder could be read: the table gives each reason")


def jobs_of(parser: argparse.ArgumentParser, sweep_dir: Path) -> list[Job]:
    """The sweep's jobs; a one-line error (exit 2) where it is no sweep folder to read."""
    try:
        if not sweep_dir.is_dir():
            parser.error(f"{sweep_dir} is not a folder")
        jobs = find_jobs(sweep_dir)
    except OSError as error:  # a folder this user may not enter or list
        parser.error(f"{sweep_dir} cannot be read: {error.strerror}")
    if not jobs:
        parser.error(f"{sweep_dir} holds no Hydra job folders (*/.hydra/hydra.yaml)")
    return jobs


if __name__ == "__main__":
    main()
