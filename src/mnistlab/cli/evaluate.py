"""mnistlab-evaluate: measure a run's saved model on a split, as the run measured it.

mnistlab-evaluate outputs/runs/<time>                        # best.pt on the test split
mnistlab-evaluate outputs/runs/<time> checkpoint=final split=val
mnistlab-evaluate outputs/runs/<time> dataset=idx dataset.source.root=/data/other-idx-set
mnistlab-evaluate outputs/runs/<time> dataset.source.num_val_samples=10000 split=val

Prints the figures and writes them to <run>/evaluations/<time>_<checkpoint>_<split>.json; the
run's metrics.json stays as the run wrote it. Torch loads only once the command line is read:
--help and a bad setting answer at once.
"""

import sys
from typing import Any

from mnistlab import names
from mnistlab.cli import fromrun

PROG = "mnistlab-evaluate"


def main(argv: list[str] | None = None) -> None:
    """mnistlab-evaluate RUN [checkpoint=best|final] [split=test|val] [dataset/device settings]."""
    with fromrun.reader_gone():
        command(argv)


def command(argv: list[str] | None) -> None:
    """Read the command line, then do the work (torch loads once it is read)."""
    parser = fromrun.parser_of(PROG, __doc__)
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"{fromrun.CHECKPOINT_HELP}; split=test (the default) or split=val; and overrides "
        "of the run's data, device or precision: dataset=..., dataset.source.*, device.*, "
        "loop.precision",
    )
    fromrun.add_config_dir(parser)
    args = parser.parse_args(argv)
    choices = {"checkpoint": tuple(names.CHECKPOINTS), "split": names.EVALUATED_SPLITS}
    asked = fromrun.read(PROG, args.settings, choices)
    with fromrun.one_line(PROG):
        saved = fromrun.open_saved(
            args.run, asked.choices["checkpoint"], asked.overrides, args.config_dir
        )
        from mnistlab.run import evaluation

        found = evaluation.evaluate_run(saved, asked.choices["split"])
        print(shown(found))
        same = evaluation.recorded_figures(saved, found)
        if same:
            print(compared(found, same))
        print(f"written: {evaluation.write_evaluation(args.run, found)}")


def shown(found: dict[str, Any]) -> str:
    """The figures, in full precision (as metrics.json has them), and what was measured."""
    split = found["split"]
    loss, accuracy = found[f"{split}_loss"], found[f"{split}_accuracy"]
    correct = round(accuracy * found["samples"])
    return (
        f"{found['run']}: checkpoint={found['checkpoint']} ({found['file']}, epoch "
        f"{found['epoch']}, step {found['step']}), split={split}, {found['samples']} samples, "
        f"{found['precision']} precision\n"
        f"{split}_loss {loss!r}  {split}_accuracy {accuracy!r} ({correct}/{found['samples']})"
    )


def compared(found: dict[str, Any], recorded: dict[str, float]) -> str:
    """The run's own figures for this model and split, and whether these are the same."""
    differ = [key for key, value in recorded.items() if found[key] != value]
    verdict = "the same" if not differ else f"{', '.join(differ)} differ"
    figures = ", ".join(f"{key} {value!r}" for key, value in recorded.items())
    return f"{names.METRICS_FILE} recorded {figures}: {verdict}"


if __name__ == "__main__":
    main(sys.argv[1:])
