"""``convfeat evaluate``: frozen features + a classifier, fitted and scored on DATA_DIR."""

import time

from ._inputs import training_inputs
from ._options import (
    add_backend,
    add_batch_size,
    add_command,
    add_cut_options,
    add_data_dir,
    add_image_options,
    add_quiet,
    add_save,
    add_tta,
    add_weights,
    extractor_from_args,
    printer,
)
from ._report import accuracy_table


def add_parser(commands):
    command = add_command(
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
            "--save model.skops"
        ),
    )
    add_data_dir(command)
    add_weights(command)
    command.add_argument(
        "--classifier",
        choices=["logreg", "mlp"],
        default="logreg",
        help="LogisticRegression, or the book's dense head (KerasMLPClassifier: "
        "30 epochs, RMSprop 2e-5, batch 20) (default: logreg)",
    )
    add_cut_options(command)
    add_tta(command)
    add_image_options(command)
    add_backend(command)
    add_batch_size(command)
    add_save(command, "pipeline")
    add_quiet(command)


def run(args, out=None):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from .. import save

    say = printer(out)
    weights, paths, labels, splits = training_inputs(args, say)
    verbose = 0 if args.quiet else 1
    extractor = extractor_from_args(args, weights)
    if args.classifier == "mlp":
        from .. import KerasMLPClassifier

        classifier = KerasMLPClassifier(verbose=2 if verbose else 0, random_state=0)
    else:
        classifier = LogisticRegression(max_iter=1000)
    say(f"extractor: {extractor}")

    rows = []
    start = time.perf_counter()
    features = extractor.fit_transform(paths)
    extract_seconds = time.perf_counter() - start
    say(f"backend: {extractor.backend_}")
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

    accuracy_table(say, rows, with_fit=True)
    if args.save:
        save(pipeline, args.save)
        say(f"saved the fitted pipeline to {args.save}")
    return rows
