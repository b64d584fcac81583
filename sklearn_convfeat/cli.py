"""The ``convfeat`` command line.

``convfeat evaluate DATA_DIR`` fits ``Pipeline([ConvFeatureExtractor, classifier])`` on
``DATA_DIR/train`` and reports accuracy on ``DATA_DIR/validation`` and ``DATA_DIR/test``
(each a class-per-folder directory), with timings.

``convfeat cam IMAGE... --model FILE -o OUT`` writes Grad-CAM overlays of a fitted model
saved with ``joblib.dump`` (a FineTuner or a feature pipeline) or with Keras (``.keras``).
"""

import argparse
import os
import sys
import time

WEIGHTS_HELP = (
    "'imagenet' (Keras download and cache; the environment variable "
    "SKLEARN_CONVFEAT_WEIGHTS points it at a local file), a local .h5/.weights.h5 file, "
    "or 'random' (untrained, seed 0: for smoke tests)"
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="convfeat",
        description="Transfer learning with a pretrained VGG16, the scikit-learn way.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluate = commands.add_parser(
        "evaluate",
        help="fit features + classifier on DATA_DIR/train, score validation/ and test/",
        description=(
            "Fit Pipeline([ConvFeatureExtractor, classifier]) on DATA_DIR/train and "
            "report accuracy on DATA_DIR/validation and DATA_DIR/test when present. "
            "Each is a class-per-folder directory."
        ),
    )
    evaluate.add_argument("data_dir", metavar="DATA_DIR")
    evaluate.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    evaluate.add_argument(
        "--classifier",
        choices=["logreg", "mlp"],
        default="logreg",
        help="LogisticRegression, or the book's dense head (KerasMLPClassifier: "
        "30 epochs, RMSprop 2e-5, batch 20) (default: logreg)",
    )
    evaluate.add_argument("--layer", default="block5_pool", help="cut layer name or block 1-5")
    evaluate.add_argument("--pooling", choices=["flatten", "avg", "max"], default="flatten")
    evaluate.add_argument(
        "--preprocessing", choices=["vgg16", "rescale"], default="vgg16",
        help="vgg16: the input the weights were trained on; rescale: the book's x/255",
    )
    evaluate.add_argument(
        "--image-size", type=int, default=150, metavar="N", help="resize to N×N (default 150)"
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--save", metavar="FILE", help="joblib.dump the fitted pipeline here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")

    cam = commands.add_parser(
        "cam",
        help="write class activation heatmaps laid over IMAGE(s) as PNG",
        description=(
            "Explain a fitted model's decision on each IMAGE with a class activation "
            "heatmap (Grad-CAM by default) and write the heatmap laid over the image."
        ),
    )
    cam.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s)")
    cam.add_argument(
        "--model", required=True, metavar="FILE",
        help="a fitted FineTuner or Pipeline saved with joblib.dump (e.g. by "
        "'convfeat evaluate --save'), or a Keras model saved as .keras",
    )
    cam.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="a .png file (one IMAGE), an existing folder (writes STEM_cam.png there), "
        "or a pattern with {stem} such as 'cams/{stem}.png'",
    )
    cam.add_argument(
        "--target", help="class label (or index) to explain (default: the predicted class)"
    )
    cam.add_argument(
        "--layer", help="convolutional layer to explain (default: the last one before the cut)"
    )
    cam.add_argument(
        "--method", choices=["gradcam", "gradcam++", "scorecam"], default="gradcam"
    )
    cam.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity (default 0.4)")
    cam.add_argument("--colormap", default="jet", help="default jet; others need matplotlib")
    return parser


def evaluate(args, out=None):
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from . import ConvFeatureExtractor, load_image_folder

    train_dir = os.path.join(args.data_dir, "train")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(
            f"DATA_DIR must hold a train/ folder (and optionally validation/ and test/), "
            f"each with one sub-folder per class. {train_dir!r} is not a folder."
        )
    layer = parse_choice(args.layer, None)
    weights = None if args.weights == "random" else args.weights
    verbose = 0 if args.quiet else 1
    extractor = ConvFeatureExtractor(
        weights=weights,
        layer=layer,
        pooling=args.pooling,
        image_size=(args.image_size, args.image_size),
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        verbose=verbose,
        random_state=0,
    )
    if args.classifier == "mlp":
        from . import KerasMLPClassifier

        classifier = KerasMLPClassifier(verbose=2 if verbose else 0, random_state=0)
    else:
        classifier = LogisticRegression(max_iter=1000)

    def say(message):
        print(message, file=out or sys.stdout, flush=True)

    paths, y_index, class_names = load_image_folder(train_dir)
    labels = np.asarray(class_names, dtype=object)
    say(f"train: {len(paths)} images, classes {class_names}")
    say(f"extractor: {extractor}")

    rows = []
    start = time.perf_counter()
    features = extractor.fit_transform(paths)
    extract_seconds = time.perf_counter() - start
    start = time.perf_counter()
    classifier.fit(features, labels[y_index])
    fit_seconds = time.perf_counter() - start
    rows.append(("train", len(paths), classifier.score(features, labels[y_index]),
                 extract_seconds, fit_seconds))
    pipeline = Pipeline([("feat", extractor), ("clf", classifier)])

    for split in ("validation", "test"):
        split_dir = os.path.join(args.data_dir, split)
        if not os.path.isdir(split_dir):
            continue
        split_paths, split_index, split_classes = load_image_folder(split_dir)
        if split_classes != class_names:
            raise ValueError(
                f"{split}/ has classes {split_classes}, train/ has {class_names}: "
                "the class sub-folders must match."
            )
        start = time.perf_counter()
        split_features = extractor.transform(split_paths)
        seconds = time.perf_counter() - start
        accuracy = classifier.score(split_features, labels[split_index])
        rows.append((split, len(split_paths), accuracy, seconds, 0.0))

    say("")
    say(f"{'split':<11}{'images':>7}{'accuracy':>10}{'extract s':>11}{'img/s':>8}{'fit s':>8}")
    for split, n, accuracy, seconds, fit in rows:
        say(f"{split:<11}{n:>7}{accuracy:>10.4f}{seconds:>11.1f}{n / seconds:>8.1f}{fit:>8.1f}")
    if args.save:
        joblib.dump(pipeline, args.save)
        say(f"saved the fitted pipeline to {args.save}")
    return rows


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


def parse_choice(text, classes):
    """A command-line string as the class label it names, else an int index."""
    if text is None:
        return None
    for label in classes if classes is not None else ():
        if str(label) == text:
            return label
    return int(text) if text.lstrip("-").isdigit() else text


def explain(args, out=None):
    from PIL import Image

    from ._cam import _check_X, _explain, _make_explainer, _resolve_targets, overlay

    model = load_model(args.model)
    outputs = output_paths(args.output, args.images)
    layer = parse_choice(args.layer, None)
    explainer = _make_explainer(model, layer)
    images, _ = _check_X(list(args.images), explainer)
    targets = _resolve_targets(
        explainer, parse_choice(args.target, explainer.classes.tolist()), len(images)
    )
    heatmaps, used, proba = _explain(explainer, images, targets, args.method, 64, 32)
    for image, heatmap, index, row, path in zip(args.images, heatmaps, used, proba, outputs):
        blended = overlay(image, heatmap, alpha=args.alpha, colormap=args.colormap)
        Image.fromarray(blended).save(path)
        label = explainer.classes.tolist()[index]
        print(f"{image}: class {label!r} (p={row[index]:.2f}) -> {path}", file=out or sys.stdout)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            evaluate(args)
        elif args.command == "cam":
            explain(args)
    except (OSError, ValueError, TypeError) as exc:
        print(f"convfeat: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
