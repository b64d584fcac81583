"""JPEG draft decoding and accuracy: does decoding large JPEGs at a reduced scale change
what frozen features + LogisticRegression learn?

Question
    ``decode_image`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (still at least
    the target size) when it is at least ``DRAFT_MIN_REDUCTION`` times larger than the
    target on both sides; the antialiased resize then starts from those pixels instead
    of the full-resolution ones. How far apart are the resized inputs, and does test
    accuracy move?

Setup
    cats_and_dogs_small (2000 train / 1000 validation / 1000 test JPEGs, all 200x200
    in the shared copy), the shared ImageNet VGG16 weights, block5_pool flattened,
    ``preprocessing="vgg16"``, LogisticRegression(max_iter=1000) fitted on train/ and
    scored on validation/ and test/. Each image size runs twice: draft decoding off
    (``DRAFT_MIN_REDUCTION`` set out of reach) and on (its value in the package). At the
    default 150x150 (and at 224) no image of this set is 2x larger than the target, so
    draft mode never triggers there and features are identical by construction; the
    sizes measured are those where it does: 100 (200/100 = 2: scale 1/2) and 50
    (200/50 = 4: scale 1/4). Columns:
      drafted             share of images decoded at reduced scale;
      pixel_mad           mean absolute difference of the resized inputs (0-255 scale)
                          between draft on and off, over the first 200 test images;
      validation / test   accuracy.

Published reference
    None. PIL documents draft mode as "configures the image file loader so it returns
    a version of the image that as closely as possible matches the given mode and
    size"; libjpeg's DCT scaling is what e.g. Pillow's ``thumbnail`` uses.
"""

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from sklearn_convfeat import ConvFeatureExtractor, load_images  # noqa: E402

COLUMNS = ["image_size", "draft", "drafted", "pixel_mad", "validation_accuracy",
           "test_accuracy", "seconds"]
# The package decodes a JPEG in draft mode from this reduction on, unless
# SKLEARN_CONVFEAT_JPEG_DRAFT=0 (the switch measured here).
PACKAGE_THRESHOLD = 2


def drafted_share(paths, image_size):
    from PIL import Image

    count = 0
    for path in paths:
        with Image.open(path) as image:
            reduction = min(image.width // image_size, image.height // image_size)
            count += image.format == "JPEG" and reduction >= PACKAGE_THRESHOLD
    return count / len(paths)


@contextlib.contextmanager
def jpeg_draft(on):
    previous = os.environ.get("SKLEARN_CONVFEAT_JPEG_DRAFT")
    os.environ["SKLEARN_CONVFEAT_JPEG_DRAFT"] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SKLEARN_CONVFEAT_JPEG_DRAFT"]
        else:
            os.environ["SKLEARN_CONVFEAT_JPEG_DRAFT"] = previous


def resized_inputs(paths, image_size, draft):
    with jpeg_draft(draft):
        return load_images(list(paths), image_size=image_size)


def run(args, splits, image_size, draft):
    with jpeg_draft(draft):
        extractor = ConvFeatureExtractor(
            weights=_common.weights_argument(args.weights), image_size=image_size,
            random_state=0,
        ).fit(splits["train"][0])
        (features, seconds) = _common.timed(
            lambda: {name: extractor.transform(paths) for name, (paths, _) in splits.items()}
        )
    classifier = LogisticRegression(max_iter=1000).fit(features["train"], splits["train"][1])
    test_paths = splits["test"][0][:200]
    on = resized_inputs(test_paths, image_size, True)
    off = resized_inputs(test_paths, image_size, False)
    return {
        "image_size": image_size,
        "draft": "on" if draft else "off",
        "drafted": drafted_share(np.concatenate([p for p, _ in splits.values()]),
                                 image_size) if draft else 0.0,
        "pixel_mad": float(np.abs(on - off).mean()),
        "validation_accuracy": classifier.score(features["validation"],
                                                splits["validation"][1]),
        "test_accuracy": classifier.score(features["test"], splits["test"][1]),
        "seconds": seconds,
    }


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--image-sizes", type=int, nargs="+", default=[100, 50])
    arguments.add_argument("--limit", type=int, default=None,
                           help="images per split (default: all)")
    args = arguments.parse_args(argv)
    splits = {split: _common.load_split(args.data, split, args.limit)
              for split in _common.SPLITS}
    rows = [run(args, splits, size, draft)
            for size in args.image_sizes for draft in (False, True)]
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "draft_min_reduction": PACKAGE_THRESHOLD,
        "rows": rows,
    }
    print(f"\nJPEG draft decoding (DRAFT_MIN_REDUCTION={PACKAGE_THRESHOLD}) and accuracy")
    _common.print_table(rows, COLUMNS)
    path = _common.write_results("bench_draft", results, args.out)
    print(f"\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
