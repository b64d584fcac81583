"""What several ``convfeat`` commands share: their options and the checks run on them
before any work starts."""

import argparse
import os
import sys
import tempfile

from .. import PREPROCESSING_MODES

WEIGHTS_HELP = (
    "'imagenet' (Keras download and cache; the environment variable "
    "SKLEARN_CONVFEAT_WEIGHTS points it at a local file), a local .h5/.weights.h5 file, "
    "or 'random' (untrained, seed 0: for smoke tests) (default: imagenet)"
)


class CommandError(ValueError):
    """Bad command-line input, found before any computing starts."""


# ----------------------------------------------------------------------------- options


def add_command(commands, name, help, description, epilog):
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_data_dir(command):
    command.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        nargs="?",
        help="folder with train/ (and validation/, test/) class folders (default: "
        "the cats-vs-dogs photos of TensorFlow's tutorials, downloaded once by "
        "sklearn_convfeat.datasets.fetch_cats_and_dogs)",
    )


def add_weights(command):
    command.add_argument(
        "--backbone",
        default="vgg16",
        help="the network: a keras.applications convnet name, any case (vgg16, "
        "resnet50, efficientnetv2b0, convnext_tiny, ...), or a keras-hub preset: a "
        "name (dinov2_small, ...), a kaggle:// or hf:// handle, or a local preset "
        "folder (needs the hub extra; default: vgg16)",
    )
    command.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)


def add_image_options(command, image_size=150):
    command.add_argument(
        "--preprocessing",
        choices=list(PREPROCESSING_MODES),
        default="auto",
        help="auto: the input the backbone's ImageNet weights were trained on; a "
        "family name (vgg16, resnet_v2, ...) picks one; rescale: the book's x/255 "
        "(default: auto)",
    )
    command.add_argument(
        "--image-size",
        type=parse_image_size,
        default=image_size,
        metavar="N|native",
        help=f"resize every image to N×N, or 'native': the network's own input size "
        f"(224×224 for VGG16 and most others) (default: {image_size})",
    )


def add_backend(command):
    command.add_argument(
        "--backend",
        choices=["auto", "tensorflow", "onnxruntime", "openvino"],
        default="auto",
        help="what runs the base: auto picks the fastest installed one measured for "
        "the network's family (exports only when the job pays for them); "
        "onnxruntime and openvino need the onnx / openvino extras (default: auto)",
    )


def parse_image_size(text):
    """``--image-size``: N pixels, or ``native`` (the estimators' ``image_size=None``)."""
    if text.strip().lower() == "native":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of pixels or 'native'; got {text!r}. E.g. "
            "--image-size 150, or --image-size native for the network's own size."
        ) from None


def image_size_of(args):
    """The estimators' ``image_size`` that ``--image-size`` asks for."""
    return None if args.image_size is None else (args.image_size, args.image_size)


def add_cut_options(command):
    command.add_argument(
        "--layer",
        default="5",
        help="where to cut the base: a stage 1-5 (the end of the last block "
        "downsampled 2^N times; for VGG16 block{N}_pool) or a layer name "
        "(block4_conv3, ...; default: 5, the end of the base)",
    )
    command.add_argument(
        "--pooling",
        choices=["flatten", "avg", "max", "cls", "cls+avg", "embedding"],
        default="flatten",
        help="flatten the feature map, or average/max it over space; for a keras-hub "
        "transformer, cls (class token), avg (mean patch token), cls+avg, flatten "
        "(patch tokens) or embedding (CLIP/SigLIP image embedding) (default: flatten)",
    )


def add_tta(command):
    command.add_argument(
        "--tta",
        choices=["flip", "dihedral"],
        default=None,
        help="test-time augmentation: flip averages the features of each image and "
        "of its horizontal mirror, for every image (2x the forward passes); dihedral "
        "over the 8 symmetries of the square (8x; scenes seen from above) "
        "(default: none)",
    )


def add_batch_size(command, default=32, help="images per forward pass"):
    command.add_argument(
        "--batch-size", type=int, default=default, help=f"{help} (default: {default})"
    )


SAVE_FORMATS = (".skops",)


def add_save(command, what):
    command.add_argument(
        "--save",
        metavar="FILE.skops",
        help=f"save the fitted {what} here with sklearn_convfeat.save (a skops file, "
        "which runs no code when loaded; the name must end in .skops)",
    )


def add_quiet(command):
    command.add_argument("--quiet", action="store_true", help="no progress bars")


# ------------------------------------------------------------------ checks done up front


def check_weights(value):
    """``--weights`` as the estimators' ``weights``; a bad file is an error now."""
    from .. import check_weights as check_weights_parameter

    if value == "random":
        return None
    try:
        check_weights_parameter(value)
    except (OSError, ValueError) as exc:
        usable_name = value == "imagenet" or os.path.isfile(value)
        problem = f"is refused: {exc}" if usable_name else "is not a file"
        raise CommandError(
            f"--weights {value!r} {problem}. Give 'imagenet', 'random', or the path "
            "of a VGG16 notop weights file (.h5, .weights.h5 or .keras)."
        ) from exc
    return value


def check_output(path, option, extensions=None):
    """Refuse an output path that cannot be written before hours of work, not after."""
    if extensions is not None and not path.lower().endswith(extensions):
        raise CommandError(
            f"{option} {path!r} must end in {' or '.join(extensions)}: the extension "
            "chooses the format."
        )
    if os.path.isdir(path):
        raise CommandError(f"{option} {path!r} is a folder: give a file name in it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        problem = "is a file" if os.path.exists(folder) else "does not exist"
        raise CommandError(
            f"{option} {path!r} cannot be written: its folder {folder!r} {problem}. "
            "Give a path in an existing folder."
        )
    if not os.access(folder, os.W_OK) or (
        os.path.exists(path) and not os.access(path, os.W_OK)
    ):
        raise CommandError(
            f"{option} {path!r} cannot be written: no write permission. Choose "
            "another place."
        )
    return path


def parse_choice(text, classes):
    """A command-line string as the class label it names, else an int index."""
    if text is None:
        return None
    for label in classes if classes is not None else ():
        if str(label) == text:
            return label
    return int(text) if text.lstrip("-").isdigit() else text


def printer(out):
    """``say(message)``: a line to ``out`` (standard output by default), flushed."""

    def say(message=""):
        print(message, file=out or sys.stdout, flush=True)

    return say


def extractor_from_args(args, weights, **params):
    """The ConvFeatureExtractor that the cut and image options of a command describe."""
    from .. import ConvFeatureExtractor

    return ConvFeatureExtractor(
        backbone=args.backbone,
        weights=weights,
        layer=parse_choice(args.layer, None),
        pooling=args.pooling,
        image_size=image_size_of(args),
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
        random_state=0,
        tta=args.tta,
        backend=getattr(args, "backend", "auto"),
        **params,
    )


def import_tensorflow_quietly():
    """Import TensorFlow with its start-up log lines silenced.

    TensorFlow's C++ side writes several lines to standard error while it loads,
    before any logging setting applies; a command line shows its own one-line errors
    and progress instead. What it wrote is shown after all if the import fails.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
