"""``convfeat cam``: class activation heatmaps of a saved model laid over images."""

import os
import sys

from .. import CAM_METHODS
from ._options import (
    CommandError,
    add_command,
    check_output,
    import_tensorflow_quietly,
    parse_choice,
)


def add_parser(commands):
    command = add_command(
        commands,
        "cam",
        help="write class activation heatmaps laid over IMAGE(s) as PNG",
        description=(
            "Explain a fitted model's decision on each IMAGE with a class activation "
            "heatmap (Grad-CAM by default) and write the heatmap laid over the image."
        ),
        epilog=(
            "example:\n"
            "  convfeat cam test/dogs/dog.1500.jpg --model tuner.skops -o dog_cam.png"
        ),
    )
    command.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s)")
    command.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="a fitted FineTuner or Pipeline saved with sklearn_convfeat.save (e.g. "
        "by 'convfeat evaluate --save'), or a Keras model saved as .keras",
    )
    command.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also read --model as a pickle (joblib.dump). WARNING: loading a pickle "
        "runs any code it holds; use it only for files you made or trust",
    )
    command.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a .png file (one IMAGE), an existing folder (writes STEM_cam.png there), "
        "or a pattern with {stem} such as 'cams/{stem}.png'",
    )
    command.add_argument(
        "--target",
        help="class label (or index) to explain (default: the predicted class)",
    )
    command.add_argument(
        "--layer",
        help="convolutional layer to explain (default: the last one before the cut)",
    )
    command.add_argument(
        "--method", choices=CAM_METHODS, default="gradcam"
    )
    command.add_argument(
        "--alpha", type=float, default=0.4, help="heatmap opacity (default: 0.4)"
    )
    command.add_argument(
        "--colormap", default="jet", help="default jet; others need matplotlib"
    )


def load_model(path, trust_pickle=False):
    """A model saved by ``sklearn_convfeat.save`` (skops), or a Keras ``.keras`` file.

    Neither format runs code when loaded. A pickle (``joblib.dump``) is read only with
    ``trust_pickle``, since loading one runs whatever it holds.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path!r} is not a file.")
    if path.endswith(".keras"):
        return _load_keras(path)
    from .. import load

    try:
        model = load(path, allow_pickle=trust_pickle)
    except ValueError as exc:  # not a skops file: say what the command line offers
        raise CommandError(f"--model {path!r}: {exc}") from exc
    if not hasattr(model, "predict") and not hasattr(model, "layers"):
        raise CommandError(
            f"--model {path!r} holds a {type(model).__name__}, not a fitted model. Save "
            "a fitted FineTuner or Pipeline with sklearn_convfeat.save(model, path)."
        )
    return model


def _load_keras(path):
    """A ``.keras`` archive, or what is wrong with the file (Keras says "not found")."""
    import zipfile

    from .._keras_state import UnsafeLambdaError, model_from_bytes

    fix = (
        "Save the model with model.save('model.keras'), or give a skops file written "
        "by sklearn_convfeat.save."
    )
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"--model {path!r} is not a Keras archive: it is not a zip file (a .keras "
            f"file is a zip holding config.json and the weights). {fix}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise CommandError(
                    f"--model {path!r} is a zip file but not a Keras archive: it holds "
                    f"no config.json. {fix}"
                )
        with open(path, "rb") as file:
            return model_from_bytes(file.read(), compile=False, what=f"--model {path!r}")
    except CommandError:
        raise
    except UnsafeLambdaError as exc:  # a sound archive: the message says why and how
        raise CommandError(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        message = " ".join(str(exc).split())
        raise CommandError(
            f"--model {path!r} is a damaged or unsupported Keras archive "
            f"({type(exc).__name__}: {message}). {fix}"
        ) from exc


# What PIL writes overlays as, by file ending.
PICTURE_FORMATS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def output_paths(pattern, images):
    """Where each overlay goes; every path checked now, before any work."""
    stems = [os.path.splitext(os.path.basename(image))[0] for image in images]
    if "{" in pattern or "}" in pattern:
        try:
            paths = [pattern.format(stem=stem) for stem in stems]
        except (KeyError, IndexError, ValueError) as exc:
            raise CommandError(
                f"-o {pattern!r} is not a valid pattern ({type(exc).__name__}: {exc}): "
                "the only field is {stem}, e.g. 'cams/{stem}.png'."
            ) from exc
    elif os.path.isdir(pattern):
        paths = [os.path.join(pattern, f"{stem}_cam.png") for stem in stems]
    elif len(images) > 1:
        raise CommandError(
            f"-o {pattern!r} is one file but {len(images)} images were given: pass an "
            "existing folder or a pattern with {stem}, such as 'cams/{stem}.png'."
        )
    else:
        paths = [pattern]
    for path in paths:
        check_output(path, "-o", PICTURE_FORMATS)
    return paths


def run(args, out=None):
    from PIL import Image

    from .. import CamDisplay, overlay

    missing = [image for image in args.images if not os.path.isfile(image)]
    if missing:
        raise CommandError(
            f"{len(missing)} IMAGE file(s) do not exist: {', '.join(map(repr, missing[:3]))}."
        )
    outputs = output_paths(args.output, args.images)
    import_tensorflow_quietly()
    model = load_model(args.model, trust_pickle=args.trust_pickle)
    classes = getattr(model, "classes_", None)
    target = parse_choice(args.target, None if classes is None else list(classes))
    display = CamDisplay.from_estimator(
        model, list(args.images), target="predicted" if target is None else target,
        layer=parse_choice(args.layer, None), method=args.method, plot=False,
    )
    for image, heatmap, label, probability, path in zip(
        args.images, display.heatmaps, display.labels.tolist(), display.probabilities, outputs
    ):
        blended = overlay(image, heatmap, alpha=args.alpha, colormap=args.colormap)
        Image.fromarray(blended).save(path)
        print(
            f"{image}: class {label!r} (p={probability:.2f}) -> {path}",
            file=out or sys.stdout,
        )
