"""mnistlab-summarize: rebuild a sweep's summary.csv, summary.md and report.html from its folder.

mnistlab-summarize outputs/sweeps/<time>     # (re)build summary.csv, summary.md, report.html
mnistlab-summarize <sweep> <sweep> ...       # and one report.html comparing them

Everything is rebuilt from the job folders, so it works on any sweep: finished, failed or
stopped. Kept free of torch, so that the command starts in a blink.
"""

import argparse
from pathlib import Path

from mnistlab import names
from mnistlab.report.callback import print_report
from mnistlab.report.jobs import find_jobs
from mnistlab.report.summary import write_summary


def main(argv: list[str] | None = None) -> None:
    """mnistlab-summarize <sweep dir> [<sweep dir> ...]: rebuild summaries and report.html."""
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
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.error(f"{sweep_dir} is not a folder")
        if not find_jobs(sweep_dir):
            parser.error(f"{sweep_dir} holds no Hydra job folders (*/.hydra/hydra.yaml)")
    for sweep_dir in args.sweep_dirs:
        print(write_summary(sweep_dir), flush=True)
    first = args.sweep_dirs[0]
    folder = first if len(args.sweep_dirs) == 1 else first.parent
    default = folder / names.REPORT_FILE
    print_report(args.sweep_dirs, args.out or default, args.group_over)


if __name__ == "__main__":
    main()
