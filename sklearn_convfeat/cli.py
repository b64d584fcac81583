"""The ``convfeat`` command line.

``convfeat extract INPUT -o OUT`` writes the features of a class-per-folder directory,
a folder of images or a text file listing image paths to ``.npy`` or ``.parquet``.

``convfeat evaluate DATA_DIR`` fits ``Pipeline([ConvFeatureExtractor, classifier])`` on
``DATA_DIR/train`` and reports accuracy on ``DATA_DIR/validation`` and ``DATA_DIR/test``
(each a class-per-folder directory), with timings.

``convfeat finetune DATA_DIR`` fits a :class:`FineTuner` on ``DATA_DIR/train`` (with
``DATA_DIR/validation`` as validation data) and reports accuracy and wall time.

``convfeat cam IMAGE... --model FILE -o OUT`` writes Grad-CAM overlays of a fitted model
saved with ``joblib.dump`` (a FineTuner or a feature pipeline) or with Keras (``.keras``).

Every error is one line, ``convfeat <command>: error: ...``, and exit status 2. Inputs
and output paths are checked before TensorFlow is even imported, so a typo costs
seconds, not a run.
"""

import argparse
import os
import sys
import time

from ._cam import METHODS as CAM_METHODS
from ._images import IMAGE_EXTENSIONS

WEIGHTS_HELP = (
    "'imagenet' (Keras download and cache; the environment variable "
    "SKLEARN_CONVFEAT_WEIGHTS points it at a local file), a local .h5/.weights.h5 file, "
    "or 'random' (untrained, seed 0: for smoke tests) (default: imagenet)"
)
FEATURE_FORMATS = (".npy", ".parquet")


class CommandError(ValueError):
    """Bad command-line input, found before any computing starts."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    from . import __version__

    parser = _Parser(
        prog="convfeat",
        description="Transfer learning with a pretrained VGG16, the scikit-learn way. "
        "'convfeat COMMAND --help' describes each command.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_extract(commands)
    _add_evaluate(commands)
    _add_finetune(commands)
    _add_cam(commands)
    return parser


def _add_command(commands, name, help, description, epilog):
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_weights(command):
    command.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)


def _add_image_options(command, image_size=150):
    command.add_argument(
        "--preprocessing",
        choices=["vgg16", "rescale"],
        default="vgg16",
        help="vgg16: the input the ImageNet weights were trained on; rescale: the "
        "book's x/255 (default: vgg16)",
    )
    command.add_argument(
        "--image-size",
        type=int,
        default=image_size,
        metavar="N",
        help=f"resize every image to N×N (default: {image_size})",
    )


def _add_cut_options(command):
    command.add_argument(
        "--layer",
        default="block5_pool",
        help="where to cut VGG16: a layer name (block4_conv3, ...) or a block 1-5 "
        "(default: block5_pool)",
    )
    command.add_argument(
        "--pooling",
        choices=["flatten", "avg", "max"],
        default="flatten",
        help="flatten the feature map, or average/max it over space (default: flatten)",
    )


def _add_quiet(command):
    command.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_extract(commands):
    command = _add_command(
        commands,
        "extract",
        help="write the features of a folder or a list of images to .npy or .parquet",
        description=(
            "Run images through the frozen VGG16 base (ConvFeatureExtractor) and write "
            "one row of features per image.\n\n"
            "INPUT is one of:\n"
            "  - a class-per-folder directory (INPUT/<class>/<images>): the .parquet\n"
            "    output gets a 'label' column;\n"
            "  - a folder holding the images themselves;\n"
            "  - a text file listing image paths, one per line (blank lines and lines\n"
            "    starting with # are skipped; relative paths are read from the list's\n"
            "    folder);\n"
            "  - one image file.\n"
            "Folders are read in sorted file order; a list keeps its own order.\n\n"
            "OUT ends in .npy (a float32 array, one row per image, in that order) or\n"
            ".parquet (needs pandas and pyarrow: a 'path' column, a 'label' column for\n"
            "class folders, then one column per feature, named as\n"
            "ConvFeatureExtractor.get_feature_names_out names them)."
        ),
        epilog=(
            "examples:\n"
            "  convfeat extract photos/ -o features.npy --layer 4 --pooling avg\n"
            "  convfeat extract cats_and_dogs_small/train -o train.parquet "
            "--weights vgg16_notop.weights.h5"
        ),
    )
    command.add_argument("input", metavar="INPUT", help="folder, list file or image")
    command.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="features file, .npy or .parquet",
    )
    _add_weights(command)
    _add_cut_options(command)
    _add_image_options(command)
    command.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per forward pass (default: 32)",
    )
    command.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="give files that cannot be decoded a row of NaN (and list them) instead of "
        "stopping",
    )
    _add_quiet(command)


def _add_evaluate(commands):
    command = _add_command(
        commands,
        "evaluate",
        help="fit features + classifier on DATA_DIR/train, score validation/ and test/",
        description=(
            "Fit Pipeline([ConvFeatureExtractor, classifier]) on DATA_DIR/train and "
            "report accuracy on DATA_DIR/validation and DATA_DIR/test when present. "
            "Each is a class-per-folder directory."
        ),
        epilog=(
            "example:\n"
            "  convfeat evaluate cats_and_dogs_small --weights vgg16_notop.weights.h5 "
            "--save model.joblib"
        ),
    )
    command.add_argument("data_dir", metavar="DATA_DIR")
    _add_weights(command)
    command.add_argument(
        "--classifier",
        choices=["logreg", "mlp"],
        default="logreg",
        help="LogisticRegression, or the book's dense head (KerasMLPClassifier: "
        "30 epochs, RMSprop 2e-5, batch 20) (default: logreg)",
    )
    _add_cut_options(command)
    _add_image_options(command)
    command.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per forward pass (default: 32)",
    )
    command.add_argument(
        "--save", metavar="FILE", help="joblib.dump the fitted pipeline here"
    )
    _add_quiet(command)


def _add_finetune(commands):
    command = _add_command(
        commands,
        "finetune",
        help="fine-tune VGG16's top blocks with a dense head (FineTuner) on DATA_DIR",
        description=(
            "Fit FineTuner on DATA_DIR/train: phase 1 trains the dense head on the "
            "frozen base, phase 2 the top --unfreeze blocks with it. DATA_DIR/validation "
            "(when present) is the validation data of every epoch and of early "
            "stopping; accuracy is reported on validation/ and test/ when present. Each "
            "is a class-per-folder directory."
        ),
        epilog=(
            "example (the book's recipe, with early stopping instead of 100 epochs):\n"
            "  convfeat finetune cats_and_dogs_small --weights vgg16_notop.weights.h5 \\\n"
            "      --fine-tune-epochs 15 --early-stopping --patience 3 --save tuner.joblib"
        ),
    )
    command.add_argument("data_dir", metavar="DATA_DIR")
    _add_weights(command)
    command.add_argument(
        "--unfreeze",
        type=int,
        default=1,
        help="blocks trained in phase 2, from the top: 1 is block5, 0 skips phase 2 "
        "(default: 1)",
    )
    command.add_argument(
        "--head-epochs", type=int, default=30, help="epochs of phase 1 (default: 30)"
    )
    command.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=100,
        help="epochs of phase 2 (default: 100, the book's)",
    )
    command.add_argument(
        "--head-learning-rate",
        type=float,
        default=2e-5,
        metavar="LR",
        help="RMSprop learning rate of phase 1 (default: 2e-5)",
    )
    command.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=1e-5,
        metavar="LR",
        help="RMSprop learning rate of phase 2 (default: 1e-5)",
    )
    command.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the book's augmentation (rotation, shifts, shear, zoom, flips); it "
        "turns the frozen-prefix cache off (default: off)",
    )
    command.add_argument(
        "--batch-size", type=int, default=20, help="training minibatch (default: 20)"
    )
    command.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop each phase when the validation loss stops improving and keep its "
        "best weights (validation/, else 10%% of train/ held out)",
    )
    command.add_argument(
        "--patience",
        type=int,
        default=5,
        help="early-stopping patience in epochs (default: 5)",
    )
    command.add_argument(
        "--cache",
        choices=["auto", "memory", "disk", "none"],
        default="auto",
        help="where the frozen blocks' outputs are kept between epochs (default: auto)",
    )
    _add_image_options(command)
    command.add_argument(
        "--seed", type=int, default=0, help="random_state of the FineTuner (default: 0)"
    )
    command.add_argument(
        "--save", metavar="FILE", help="joblib.dump the fitted FineTuner here"
    )
    _add_quiet(command)


def _add_cam(commands):
    command = _add_command(
        commands,
        "cam",
        help="write class activation heatmaps laid over IMAGE(s) as PNG",
        description=(
            "Explain a fitted model's decision on each IMAGE with a class activation "
            "heatmap (Grad-CAM by default) and write the heatmap laid over the image."
        ),
        epilog=(
            "example:\n"
            "  convfeat cam test/dogs/dog.1500.jpg --model tuner.joblib -o dog_cam.png"
        ),
    )
    command.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s)")
    command.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="a fitted FineTuner or Pipeline saved with joblib.dump (e.g. by "
        "'convfeat evaluate --save'), or a Keras model saved as .keras",
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
        "--method", choices=list(CAM_METHODS), default="gradcam"
    )
    command.add_argument(
        "--alpha", type=float, default=0.4, help="heatmap opacity (default: 0.4)"
    )
    command.add_argument(
        "--colormap", default="jet", help="default jet; others need matplotlib"
    )


# ------------------------------------------------------------------ checks done up front


def check_weights(value):
    """``--weights`` as the estimators' ``weights``; a missing file is an error now."""
    if value == "random":
        return None
    if value != "imagenet" and not os.path.isfile(value):
        raise CommandError(
            f"--weights {value!r} is not a file. Give 'imagenet', 'random', or the path "
            "of a VGG16 notop weights file (.h5, .weights.h5 or .keras)."
        )
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


def check_parquet_writer():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"writing .parquet needs pandas and pyarrow ({exc.name} is not installed): "
            "pip install pandas pyarrow (or the 'parquet' extra), or write .npy instead."
        ) from exc


def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _holds_images(folder):
    return any(_is_image(name) for _, _, files in os.walk(folder) for name in files)


def list_images(source):
    """``(paths, labels or None)`` of a class-per-folder directory, a folder, a list."""
    import numpy as np

    from . import load_image_folder

    if os.path.isdir(source):
        entries = sorted(os.scandir(source), key=lambda entry: entry.name)
        files = [e.path for e in entries if e.is_file() and _is_image(e.name)]
        classes = [e.name for e in entries if e.is_dir() and _holds_images(e.path)]
        if files and classes:
            raise CommandError(
                f"INPUT {source!r} holds both image files and sub-folders of images "
                f"({', '.join(classes[:3])}): keep one layout (one sub-folder per class, "
                "or the images themselves), or list the files in a text file."
            )
        if classes:
            paths, y, class_names = load_image_folder(source)
            return paths, np.asarray(class_names, dtype=object)[y]
        if not files:
            raise CommandError(
                f"INPUT {source!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."
            )
        return np.asarray(files, dtype=object), None
    if os.path.isfile(source):
        if _is_image(source):
            return np.asarray([source], dtype=object), None
        return _read_list(source), None
    raise CommandError(
        f"INPUT {source!r} does not exist. Give a class-per-folder directory, a folder "
        "of images, or a text file listing image paths (one per line)."
    )


def _read_list(list_file):
    import numpy as np

    try:
        with open(list_file, encoding="utf-8") as lines:
            entries = [line.strip() for line in lines]
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"INPUT {list_file!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) "
            "nor a UTF-8 text file listing image paths."
        ) from exc
    folder = os.path.dirname(os.path.abspath(list_file))
    paths = [
        os.path.join(folder, entry)  # an absolute entry stays as it is
        for entry in entries
        if entry and not entry.startswith("#")
    ]
    if not paths:
        raise CommandError(
            f"INPUT {list_file!r} lists no image paths: write one path per line."
        )
    return np.asarray(paths, dtype=object)


def _class_folders(data_dir):
    """The train/ (required), validation/ and test/ folders of DATA_DIR."""
    if not os.path.isdir(data_dir):
        raise CommandError(f"DATA_DIR {data_dir!r} is not a folder.")
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(
            f"DATA_DIR must hold a train/ folder (and optionally validation/ and test/), "
            f"each with one sub-folder per class. {train_dir!r} is not a folder."
        )
    return {
        split: os.path.join(data_dir, split)
        for split in ("train", "validation", "test")
        if os.path.isdir(os.path.join(data_dir, split))
    }


def _load_splits(data_dir):
    """``{split: (paths, labels)}`` with class-name labels; classes must match."""
    import numpy as np

    from . import load_image_folder

    splits = {}
    train_classes = None
    for split, folder in _class_folders(data_dir).items():
        paths, y, class_names = load_image_folder(folder)
        if train_classes is None:
            train_classes = class_names
        elif class_names != train_classes:
            raise ValueError(
                f"{split}/ has classes {class_names}, train/ has {train_classes}: "
                "the class sub-folders must match."
            )
        splits[split] = (paths, np.asarray(class_names, dtype=object)[y])
    return splits


def parse_choice(text, classes):
    """A command-line string as the class label it names, else an int index."""
    if text is None:
        return None
    for label in classes if classes is not None else ():
        if str(label) == text:
            return label
    return int(text) if text.lstrip("-").isdigit() else text


def _say(out):
    def say(message=""):
        print(message, file=out or sys.stdout, flush=True)

    return say


def _extractor_from_args(args, weights, **params):
    """The ConvFeatureExtractor that the cut and image options of a command describe."""
    from . import ConvFeatureExtractor

    return ConvFeatureExtractor(
        weights=weights,
        layer=parse_choice(args.layer, None),
        pooling=args.pooling,
        image_size=(args.image_size, args.image_size),
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
        random_state=0,
        **params,
    )


# ---------------------------------------------------------------------------- commands


def extract(args, out=None):
    import numpy as np

    output = check_output(args.output, "-o", FEATURE_FORMATS)
    if output.lower().endswith(".parquet"):
        check_parquet_writer()
    weights = check_weights(args.weights)
    paths, labels = list_images(args.input)

    say = _say(out)
    extractor = _extractor_from_args(
        args, weights, on_error="skip" if args.skip_unreadable else "raise"
    )
    say(
        f"{len(paths)} images"
        + ("" if labels is None else f", classes {sorted(set(labels))}")
    )
    start = time.perf_counter()
    extractor.fit(paths)
    features = extractor.transform(paths)
    seconds = time.perf_counter() - start
    if output.lower().endswith(".parquet"):
        import pandas as pd

        table = pd.DataFrame(features, columns=extractor.get_feature_names_out())
        columns = (
            {"path": paths} if labels is None else {"path": paths, "label": labels}
        )
        table = pd.concat([pd.DataFrame(columns), table], axis=1)
        table.to_parquet(output, index=False)
    else:
        np.save(output, features)
    say(
        f"wrote {features.shape[0]}×{features.shape[1]} features ({extractor.layer_}, "
        f"{args.pooling}) to {output} in {seconds:.1f} s "
        f"({len(paths) / seconds:.1f} images/s)"
    )
    skipped = getattr(extractor, "skipped_", [])
    for index, path, reason in skipped:
        say(f"skipped row {index}, {path}: {reason}")
    return features


def evaluate(args, out=None):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if args.save:
        check_output(args.save, "--save")
    weights = check_weights(args.weights)
    splits = _load_splits(args.data_dir)

    verbose = 0 if args.quiet else 1
    extractor = _extractor_from_args(args, weights)
    if args.classifier == "mlp":
        from . import KerasMLPClassifier

        classifier = KerasMLPClassifier(verbose=2 if verbose else 0, random_state=0)
    else:
        classifier = LogisticRegression(max_iter=1000)

    say = _say(out)
    paths, labels = splits.pop("train")
    say(f"train: {len(paths)} images, classes {sorted(set(labels))}")
    say(f"extractor: {extractor}")

    rows = []
    start = time.perf_counter()
    features = extractor.fit_transform(paths)
    extract_seconds = time.perf_counter() - start
    start = time.perf_counter()
    classifier.fit(features, labels)
    fit_seconds = time.perf_counter() - start
    rows.append(
        (
            "train",
            len(paths),
            classifier.score(features, labels),
            extract_seconds,
            fit_seconds,
        )
    )
    pipeline = Pipeline([("feat", extractor), ("clf", classifier)])

    for split, (split_paths, split_labels) in splits.items():
        start = time.perf_counter()
        split_features = extractor.transform(split_paths)
        seconds = time.perf_counter() - start
        accuracy = classifier.score(split_features, split_labels)
        rows.append((split, len(split_paths), accuracy, seconds, 0.0))

    say()
    say(
        f"{'split':<11}{'images':>7}{'accuracy':>10}{'extract s':>11}{'img/s':>8}{'fit s':>8}"
    )
    for split, n, accuracy, seconds, fit in rows:
        say(
            f"{split:<11}{n:>7}{accuracy:>10.4f}{seconds:>11.1f}{n / seconds:>8.1f}{fit:>8.1f}"
        )
    if args.save:
        joblib.dump(pipeline, args.save)
        say(f"saved the fitted pipeline to {args.save}")
    return rows


def finetune(args, out=None):
    import joblib

    if args.save:
        check_output(args.save, "--save")
    weights = check_weights(args.weights)
    splits = _load_splits(args.data_dir)

    from . import FineTuner

    say = _say(out)
    tuner = FineTuner(
        weights=weights,
        unfreeze=args.unfreeze,
        image_size=(args.image_size, args.image_size),
        preprocessing=args.preprocessing,
        augment=args.augment,
        head_epochs=args.head_epochs,
        head_learning_rate=args.head_learning_rate,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        batch_size=args.batch_size,
        early_stopping=args.early_stopping,
        n_iter_no_change=args.patience,
        cache=None if args.cache == "none" else args.cache,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    paths, labels = splits.pop("train")
    say(f"train: {len(paths)} images, classes {sorted(set(labels))}")
    say(f"fine-tuner: {tuner}")
    started = time.perf_counter()
    tuner.fit(paths, labels, validation_data=splits.get("validation"))
    fit_seconds = time.perf_counter() - started
    history = tuner.history_
    phase_2 = len(history["phase"]) - tuner.fine_tune_start_
    say(
        f"fitted in {fit_seconds:.1f} s: phase 1 ran {tuner.fine_tune_start_} epoch(s), "
        f"phase 2 {phase_2}; frozen-prefix cache: {tuner.cache_ or 'off'}; "
        f"last epoch's training accuracy {history['accuracy'][-1]:.4f}"
    )
    rows = []
    for split, (split_paths, split_labels) in splits.items():
        start = time.perf_counter()
        accuracy = tuner.score(split_paths, split_labels)
        rows.append((split, len(split_paths), accuracy, time.perf_counter() - start))
    if rows:
        say()
        say(f"{'split':<11}{'images':>7}{'accuracy':>10}{'predict s':>11}")
        for split, n, accuracy, seconds in rows:
            say(f"{split:<11}{n:>7}{accuracy:>10.4f}{seconds:>11.1f}")
    say(f"wall time (fit + evaluate): {time.perf_counter() - started:.1f} s")
    if args.save:
        joblib.dump(tuner, args.save)
        say(f"saved the fitted FineTuner to {args.save}")
    return tuner


def load_model(path):
    """A model saved by joblib.dump, or a Keras model saved as .keras/.h5."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path!r} is not a file.")
    if path.endswith((".keras", ".h5")):
        import keras

        return keras.models.load_model(path, compile=False)
    import joblib

    model = joblib.load(path)
    if not hasattr(model, "predict") and not hasattr(model, "layers"):
        raise ValueError(
            f"--model {path!r} holds a {type(model).__name__}, not a fitted model. Save "
            "a fitted FineTuner or Pipeline with joblib.dump(model, path)."
        )
    return model


def output_paths(pattern, images):
    stems = [os.path.splitext(os.path.basename(image))[0] for image in images]
    if "{stem}" in pattern:
        return [pattern.format(stem=stem) for stem in stems]
    if os.path.isdir(pattern):
        return [os.path.join(pattern, f"{stem}_cam.png") for stem in stems]
    if len(images) > 1:
        raise ValueError(
            f"-o {pattern!r} is one file but {len(images)} images were given: pass an "
            "existing folder or a pattern with {stem}, such as 'cams/{stem}.png'."
        )
    return [pattern]


def explain(args, out=None):
    from PIL import Image

    from ._cam import CamDisplay, overlay

    missing = [image for image in args.images if not os.path.isfile(image)]
    if missing:
        raise CommandError(
            f"{len(missing)} IMAGE file(s) do not exist: {', '.join(map(repr, missing[:3]))}."
        )
    model = load_model(args.model)
    outputs = output_paths(args.output, args.images)
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


COMMANDS = {
    "extract": extract,
    "evaluate": evaluate,
    "finetune": finetune,
    "cam": explain,
}


def _one_line(exc):
    message = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, (OSError, ValueError, TypeError, ImportError)):
        return message
    return f"{type(exc).__name__}: {message}"  # unexpected: say what kind it was


def main(argv=None):
    """Run ``convfeat``; returns the exit status (0, or 2 after a one-line error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    prog = f"convfeat {args.command}"
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a command line prints one line, never a traceback
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
