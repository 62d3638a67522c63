"""mnistlab-predict: the class a run's saved model gives each image file, and its probability.

mnistlab-predict outputs/runs/<time> digits/                 # every PNG/JPEG in digits/ (and below)
mnistlab-predict outputs/runs/<time> a.png b.jpg checkpoint=final --out -    # the CSV on stdout

Writes a CSV (default: predictions.csv here) of file, predicted_class, probability.
The images it expects are those the run trained on: for MNIST, a white digit on a black
background, centred. Each is read as grayscale, scaled to [0, 1], resized to the model's input
size (28x28 for MNIST) where it differs, and standardised with the mean and std of the run's
training images (recorded in its checkpoint). Torch loads only once the command line is read.
"""

import re
import sys
from pathlib import Path

from mnistlab import names
from mnistlab.cli import fromrun

PROG = "mnistlab-predict"
SETTING = re.compile(r"\+{0,2}[A-Za-z_][\w.]*=.*", re.DOTALL)  # key=value, not a file name


def main(argv: list[str] | None = None) -> None:
    """mnistlab-predict RUN IMAGE_OR_FOLDER... [checkpoint=best|final] [--out FILE]."""
    with fromrun.reader_gone():
        command(argv)


def command(argv: list[str] | None) -> None:
    """Read the command line, then do the work (torch loads once it is read)."""
    parser = fromrun.parser_of(PROG, __doc__)
    parser.add_argument(
        "items",
        nargs="+",
        metavar="IMAGE|FOLDER|KEY=VALUE",
        help=f"image files, folders of them, and settings: {fromrun.CHECKPOINT_HELP}; "
        "device.* (e.g. device.name=cpu) and loop.precision override the run's",
    )
    parser.add_argument(
        "--out",
        default=names.PREDICTIONS_FILE,
        help=f"the CSV to write (default: {names.PREDICTIONS_FILE}); - for stdout",
    )
    fromrun.add_config_dir(parser)
    args = parser.parse_args(argv)
    settings = [item for item in args.items if SETTING.fullmatch(item) and not Path(item).exists()]
    given = [Path(item) for item in args.items if item not in settings]
    asked = fromrun.read(PROG, settings, {"checkpoint": tuple(names.CHECKPOINTS)})
    if not given:
        fromrun.fail(PROG, "no images given: name image files or folders after the run folder")
    with fromrun.one_line(PROG):
        from mnistlab.run import prediction

        files = prediction.image_files(given)
        saved = fromrun.open_saved(
            args.run, asked.choices["checkpoint"], asked.overrides, args.config_dir
        )
        rows = prediction.predict_files(saved, files)
        prediction.write_predictions(args.out, rows)
    if args.out != "-":
        print(f"{len(rows)} images: {args.out} ({', '.join(names.PREDICTION_COLUMNS)})")


if __name__ == "__main__":
    main(sys.argv[1:])
