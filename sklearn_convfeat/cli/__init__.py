"""The ``convfeat`` command line.

``convfeat extract INPUT -o OUT`` writes the features of a class-per-folder directory,
a folder of images or a text file listing image paths to ``.npy`` or ``.parquet``.

``convfeat evaluate [DATA_DIR]`` fits ``Pipeline([ConvFeatureExtractor, classifier])`` on
``DATA_DIR/train`` and reports accuracy on ``DATA_DIR/validation`` and ``DATA_DIR/test``
(each a class-per-folder directory), with timings.

``convfeat finetune DATA_DIR`` fits a :class:`FineTuner` on ``DATA_DIR/train`` (with
``DATA_DIR/validation`` as validation data) and reports accuracy and wall time.

``convfeat compare DATA_DIR`` ranks backbones, cuts and poolings by the cross-validated
accuracy of a probe on their features (of ``DATA_DIR/train`` when present), with a
feature cache so that the base runs once per image and backbone.

``convfeat cam IMAGE... --model FILE -o OUT`` writes Grad-CAM overlays of a fitted model
saved with ``sklearn_convfeat.save`` (a FineTuner or a feature pipeline) or with Keras
(``.keras``); a pickle only with ``--trust-pickle``.

Every error is one line, ``convfeat <command>: error: ...``, and exit status 2. Inputs
and output paths are checked before TensorFlow is even imported, so a typo costs
seconds, not a run.

Each subcommand is a module of this package with ``add_parser(commands)`` and
``run(args, out=None)``; the options several commands share are in ``_options``.
"""

import argparse
import os
import sys

from . import cam, compare, evaluate, extract, finetune

COMMANDS = {
    "extract": extract,
    "evaluate": evaluate,
    "finetune": finetune,
    "compare": compare,
    "cam": cam,
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    from .. import __version__

    parser = _Parser(
        prog="convfeat",
        description="Transfer learning with a pretrained VGG16, the scikit-learn way. "
        "'convfeat COMMAND --help' describes each command.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def _one_line(exc):
    message = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, (OSError, ValueError, TypeError, ImportError)):
        return message
    return f"{type(exc).__name__}: {message}"  # unexpected: say what kind it was


def main(argv=None):
    """Run ``convfeat``; returns the exit status (0, or 2 after a one-line error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # our errors are one line
    args = build_parser().parse_args(argv)
    prog = f"convfeat {args.command}"
    try:
        COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  a command line prints one line, no traceback
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0
