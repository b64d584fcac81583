"""``convfeat compare``: rank backbones, cuts and poolings by cross-validated
accuracy."""

import csv
import importlib.util
import os
import time

from .. import load_image_folder
from ._inputs import load_splits
from ._options import (
    WEIGHTS_HELP,
    CommandError,
    add_batch_size,
    add_command,
    add_image_options,
    add_quiet,
    check_output,
    check_weights,
    image_size_of,
    import_tensorflow_quietly,
    parse_choice,
    printer,
)

PLOT_FORMATS = (".png", ".svg", ".pdf")


def add_parser(commands):
    command = add_command(
        commands,
        "compare",
        help="rank backbones, cuts and poolings by cross-validated accuracy on "
        "DATA_DIR",
        description=(
            "Which network, and where to cut it, for these images? Each candidate "
            "(--backbone x --layer x --pooling) is a ConvFeatureExtractor whose "
            "features of every image are cross-validated with a probe (standardised "
            "LogisticRegression or k-nearest neighbours); candidates are ranked by "
            "mean accuracy over the folds (ties: the faster first). A feature cache "
            "runs the base once per image and backbone for the whole comparison.\n\n"
            "DATA_DIR is a class-per-folder directory, or a folder with train/ (and "
            "validation/, test/) class folders: then only train/ is cross-validated, "
            "and --test scores the winner on test/ (else validation/).\n\n"
            "images/s is measured during the comparison's own pass: images over the "
            "seconds spent computing the maps of that cut from the pixels (decoding "
            "and cache writes included), on this machine."
        ),
        epilog=(
            "example:\n"
            "  convfeat compare aid_aerial10 --weights vgg16_notop.weights.h5 "
            "--layer 3 4 5 \\\n"
            "      --pooling avg max --cv 5 -o results.csv --plot compare.png --test"
        ),
    )
    command.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        help="class-per-folder directory, or a folder with train/ (and validation/, "
        "test/) class folders",
    )
    command.add_argument(
        "--backbone",
        nargs="+",
        default=["vgg16"],
        metavar="NAME",
        help="networks to compare: keras.applications convnet names, any case (vgg16 "
        "resnet50 efficientnetv2b0 ...; default: vgg16)",
    )
    command.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    command.add_argument(
        "--layer",
        nargs="+",
        default=["3", "4", "5"],
        metavar="LAYER",
        help="cuts to compare: stages 1-5 (for VGG16 block{N}_pool) or layer names "
        "(default: 3 4 5)",
    )
    command.add_argument(
        "--pooling",
        nargs="+",
        choices=["flatten", "avg", "max", "cls", "cls+avg", "embedding"],
        default=["avg"],
        help="poolings to compare (flatten keeps every value: many features, a slow "
        "probe; cls, cls+avg and embedding are for keras-hub transformers, max for "
        "convnets, each skipped for the other kind; default: avg)",
    )
    command.add_argument(
        "--cv", type=int, default=5, help="cross-validation folds (default: 5)"
    )
    command.add_argument(
        "--classifier",
        choices=["logreg", "knn"],
        default="logreg",
        help="the probe, after standardisation: LogisticRegression or 5 nearest "
        "neighbours (default: logreg)",
    )
    add_image_options(command)
    add_batch_size(command)
    command.add_argument(
        "--memory",
        metavar="DIR",
        help="keep the feature cache in DIR for later runs (default: a temporary "
        "folder, removed at the end)",
    )
    command.add_argument(
        "--seed",
        type=int,
        default=0,
        help="shuffles the folds (and seeds --weights random) (default: 0)",
    )
    command.add_argument(
        "--test",
        action="store_true",
        help="fit the winner's probe on train/ and score it on test/ (else "
        "validation/); DATA_DIR must hold train/",
    )
    command.add_argument(
        "-o", "--output", metavar="RESULTS.csv", help="write one row per candidate"
    )
    command.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw CV accuracy against images/s (.png, .svg or .pdf; needs matplotlib)",
    )
    add_quiet(command)


def run(args, out=None):
    from .. import compare_backbones

    say = printer(out)
    if args.output:
        check_output(args.output, "-o", (".csv",))
    if args.plot:
        check_output(args.plot, "--plot", PLOT_FORMATS)
        check_matplotlib()
    weights = check_weights(args.weights)
    paths, labels, held_out = read_data(args.data_dir, args.test)
    check_folds(args.cv, labels)
    say(f"{len(paths)} images, classes {sorted(set(labels))}")
    import_tensorflow_quietly()
    started = time.perf_counter()
    result = compare_backbones(
        paths,
        labels,
        backbones=args.backbone,
        layers=[parse_choice(layer, None) for layer in args.layer],
        poolings=args.pooling,
        cv=args.cv,
        weights=weights,
        classifier=args.classifier,
        image_size=image_size_of(args),
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        memory=args.memory,
        refit=args.test,
        random_state=args.seed,
        verbose=0 if args.quiet else 2,
        progress=say,
    )
    seconds = time.perf_counter() - started
    folds = f"{args.cv}-fold CV"
    ranked_table(say, result.rows, f"{folds}, {len(paths)} images, {seconds:.1f} s")
    if args.output:
        write_csv(args.output, result)
        say(f"wrote {len(result.rows)} rows to {args.output}")
    if args.plot:
        plot_comparison(args.plot, result.rows, f"{folds} on {len(paths)} images")
        say(f"drew {args.plot}")
    best, tested = result.best, ""
    if args.test:
        split, (test_paths, test_labels) = held_out
        accuracy = result.best_estimator.score(test_paths, test_labels)
        tested = f"; {split}/ accuracy {accuracy:.4f} ({len(test_paths)} images)"
    say(
        f"best: {best['backbone']} {best['layer_name']} {best['pooling']} "
        f"({best['n_features']} features): CV accuracy {best['mean_test_score']:.4f} "
        f"± {best['std_test_score']:.4f}, {_speed(best['images_per_second'])} "
        f"images/s{tested}"
    )
    return result


def check_matplotlib():
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(or the 'plot' extra: pip install 'sklearn-convfeat[plot]'), or leave "
            "--plot out."
        )


def read_data(data_dir, test):
    """``(paths, labels, (split, (paths, labels)) or None)`` of DATA_DIR."""
    import numpy as np

    if not os.path.isdir(data_dir):
        raise CommandError(f"DATA_DIR {data_dir!r} is not a folder.")
    if not os.path.isdir(os.path.join(data_dir, "train")):
        if test:
            raise CommandError(
                f"--test needs DATA_DIR/train and DATA_DIR/test (or validation): "
                f"{data_dir!r} has no train/ folder. Arrange the images as "
                "train/<class>/ and test/<class>/, or leave --test out."
            )
        paths, y, class_names = load_image_folder(data_dir)
        return paths, np.asarray(class_names, dtype=object)[y], None
    splits = load_splits(data_dir)
    paths, labels = splits.pop("train")
    held_out = next(
        ((split, splits[split]) for split in ("test", "validation") if split in splits),
        None,
    )
    if test and held_out is None:
        raise CommandError(
            f"--test needs DATA_DIR/test or DATA_DIR/validation to score the winner "
            f"on: {data_dir!r} holds train/ only. Add one, or leave --test out."
        )
    return paths, labels, held_out


def check_folds(cv, labels):
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    if cv < 2:
        raise CommandError(
            f"--cv {cv} is refused: cross-validation needs at least 2 folds. Pass "
            "--cv 2 or more (default: 5)."
        )
    if cv > counts.min():
        smallest = classes.tolist()[counts.argmin()]
        raise CommandError(
            f"--cv {cv} is more than the {counts.min()} images of class {smallest!r}: "
            f"each fold needs an image of every class. Pass --cv "
            f"{max(2, counts.min())} or less, or add images of that class."
        )


def _speed(value):
    return "n/a" if value != value else f"{value:.1f}"


def ranked_table(say, rows, title):
    """The candidates, best first: backbone, layer, pooling, features, CV, images/s."""
    header = (
        "rank", "backbone", "layer", "pooling", "features", "CV accuracy", "images/s"
    )
    lines = [
        (
            str(row["rank"]),
            row["backbone"],
            row["layer_name"],
            row["pooling"],
            str(row["n_features"]),
            f"{row['mean_test_score']:.4f} ± {row['std_test_score']:.4f}",
            _speed(row["images_per_second"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(7)]
    right = {0, 4, 5, 6}  # numbers right-aligned

    def layout(cells):
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    say()
    say(f"ranked by mean CV accuracy ({title}):")
    say(layout(header))
    for line in lines:
        say(layout(line))
    say()


def write_csv(path, result):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=result.columns)
        writer.writeheader()
        writer.writerows(result.rows)


def plot_comparison(path, rows, title):
    """CV accuracy (± std) against images/s, one colour per backbone; best ringed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    backbones = list(dict.fromkeys(row["backbone"] for row in rows))
    for index, backbone in enumerate(backbones):
        mine = [row for row in rows if row["backbone"] == backbone]
        axes.errorbar(
            [row["images_per_second"] for row in mine],
            [row["mean_test_score"] for row in mine],
            yerr=[row["std_test_score"] for row in mine],
            fmt="o",
            color=f"C{index}",
            capsize=3,
            label=backbone,
        )
        for row in mine:
            axes.annotate(
                f"{row['layer_name']} {row['pooling']}",
                (row["images_per_second"], row["mean_test_score"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
    best = rows[0]
    axes.plot(
        best["images_per_second"], best["mean_test_score"], "o", markersize=14,
        markerfacecolor="none", markeredgecolor="black", label="best",
    )
    axes.margins(x=0.2, y=0.15)  # room for the labels
    axes.set_xlabel("images/s (features at that cut, this machine)")
    axes.set_ylabel("CV accuracy (mean ± std)")
    axes.set_title(f"Accuracy against speed: {title}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120)
