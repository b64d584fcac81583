"""``convfeat extract``: the features of a folder, class folders or a list of images."""

import time

from ._inputs import list_images
from ._options import (
    CommandError,
    add_backend,
    add_batch_size,
    add_command,
    add_cut_options,
    add_image_options,
    add_quiet,
    add_tta,
    add_weights,
    check_output,
    check_weights,
    extractor_from_args,
    import_tensorflow_quietly,
    printer,
)

FEATURE_FORMATS = (".npy", ".parquet")


def add_parser(commands):
    command = add_command(
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
    add_weights(command)
    add_cut_options(command)
    add_tta(command)
    add_image_options(command)
    add_backend(command)
    add_batch_size(command)
    command.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="give files that cannot be decoded a row of NaN (and list them) instead of "
        "stopping",
    )
    add_quiet(command)


def run(args, out=None):
    import numpy as np

    output = check_output(args.output, "-o", FEATURE_FORMATS)
    if output.lower().endswith(".parquet"):
        check_parquet_writer()
    weights = check_weights(args.weights)
    paths, labels = list_images(args.input)
    import_tensorflow_quietly()

    say = printer(out)
    extractor = extractor_from_args(
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
        f"{args.pooling}{'' if args.tta is None else f', tta={args.tta}'}) to {output} "
        f"in {seconds:.1f} s "
        f"({len(paths) / seconds:.1f} images/s)"
    )
    skipped = getattr(extractor, "skipped_", [])
    for index, path, reason in skipped:
        say(f"skipped row {index}, {path}: {reason}")
    return features


def check_parquet_writer():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"writing .parquet needs pandas and pyarrow ({exc.name} is not installed): "
            "pip install pandas pyarrow (or the 'parquet' extra), or write .npy instead."
        ) from exc
