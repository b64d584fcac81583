"""Grad-CAM on real photographs: where do the fine-tuned VGG16 and the frozen-feature
LogisticRegression look, and do their heatmaps point at what the models use?

Question
    For ``cats_and_dogs_small`` test images and the real ImageNet weights: what do the
    Grad-CAM overlays of a ``FineTuner`` and of ``Pipeline([ConvFeatureExtractor,
    LogisticRegression])`` look like, and is Grad-CAM faithful, i.e. does blanking
    the pixels it ranks most salient make the class probability fall faster than
    blanking pixels in random order (deletion AUC, lower is better)?

Setup
    Both models are fitted on train/ (2000 images, 150x150, ``preprocessing="vgg16"``):
    the LogisticRegression pipeline on block5_pool features; the FineTuner either
    loaded from ``--finetuner`` (e.g. saved by ``bench_finetune.py --save``) or fitted
    here with short phases (``--head-epochs``, ``--fine-tune-epochs``). Overlays of
    ``--show`` test images (half cats, half dogs) go to ``docs/images/``. The deletion
    curve (``cam_faithfulness``: 20 steps, blanked pixels set to the image's mean
    colour) is measured on ``--faithfulness-images`` test images (every k-th file,
    both classes), for Grad-CAM and for a random saliency map, explaining the
    predicted class.

Published reference
    Chollet, *Deep Learning with Python* §5.4.3 shows the Grad-CAM heatmap of one
    photograph (African elephants, full VGG16) and no faithfulness number.
    Petsiuk et al. (RISE, BMVC 2018) report deletion AUCs on ImageNet for ResNet50:
    Grad-CAM 0.123, random far higher; the expected pattern here is the same, Grad-CAM
    clearly below random.
"""

import sys
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import load_split  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from sklearn_convfeat import (  # noqa: E402
    ConvFeatureExtractor,
    FineTuner,
    cam,
    cam_faithfulness,
    plot_cam,
)

DOCS_IMAGES = _common.REPO / "docs" / "images"


def fit_models(args, weights):
    train = load_split(args.data, "train", args.limit)
    pipeline = Pipeline([
        ("feat", ConvFeatureExtractor(weights=weights, image_size=args.image_size)),
        ("clf", LogisticRegression(max_iter=1000)),
    ])
    _, seconds = _common.timed(pipeline.fit, *train)
    fit_seconds = {"logreg_pipeline": seconds}
    if args.finetuner:
        tuner = joblib.load(args.finetuner)
        fit_seconds["finetuner"] = None
    else:
        tuner = FineTuner(
            weights=weights, unfreeze=1, image_size=args.image_size, augment=False,
            head_epochs=args.head_epochs, fine_tune_epochs=args.fine_tune_epochs,
            random_state=0,
        )
        _, fit_seconds["finetuner"] = _common.timed(tuner.fit, *train)
    return {"finetuner": tuner, "logreg_pipeline": pipeline}, fit_seconds


def _relative(path):
    try:
        return str(Path(path).resolve().relative_to(_common.REPO))
    except ValueError:  # figures written outside the repository
        return str(path)


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--image-size", type=int, default=150)
    arguments.add_argument("--finetuner", metavar="FILE",
                           help="a fitted FineTuner saved with joblib.dump")
    arguments.add_argument("--head-epochs", type=int, default=10)
    arguments.add_argument("--fine-tune-epochs", type=int, default=2)
    arguments.add_argument("--show", type=int, default=4, help="test images to overlay")
    arguments.add_argument("--faithfulness-images", type=int, default=100)
    arguments.add_argument("--limit", type=int, help="training images (smoke runs)")
    arguments.add_argument("--save-models", metavar="DIR",
                           help="joblib.dump both fitted models there (for convfeat cam)")
    arguments.add_argument("--figures", default=str(DOCS_IMAGES),
                           help="folder for the overlay figures")
    args = arguments.parse_args(argv)
    weights = _common.weights_argument(args.weights)

    models, fit_seconds = fit_models(args, weights)
    if args.save_models:
        for name, model in models.items():
            joblib.dump(model, Path(args.save_models) / f"{name}.joblib")
    # Every k-th test file: both classes alike, files being sorted by class.
    shown, _ = load_split(args.data, "test", args.show)
    images, labels = load_split(args.data, "test", args.faithfulness_images)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, model in models.items():
        figure_path = figures / f"cam_{name}.png"
        plot_cam(model, shown, path=figure_path)
        heatmaps, cam_seconds = _common.timed(cam, model, images)
        scores, faith_seconds = _common.timed(
            cam_faithfulness, model, images, heatmaps, random_state=0
        )
        wins = float(np.mean(scores.auc < scores.random_auc))
        difference = scores.random_auc - scores.auc
        rows.append({
            "model": name,
            "images": len(images),
            "gradcam_deletion_auc": scores.mean_auc,
            "random_deletion_auc": scores.mean_random_auc,
            "share_gradcam_below_random": wins,
            "mean_difference": float(difference.mean()),
            "difference_standard_error": float(difference.std(ddof=1) / np.sqrt(len(images))),
            "test_accuracy_on_these": float(np.mean(model.predict(images) == labels)),
            "fit_seconds": fit_seconds[name],
            "cam_seconds": cam_seconds,
            "faithfulness_seconds": faith_seconds,
            "figure": _relative(figure_path),
            "gradcam_aucs": scores.auc.round(4).tolist(),
            "random_aucs": scores.random_auc.round(4).tolist(),
        })
    columns = ["model", "images", "gradcam_deletion_auc", "random_deletion_auc",
               "mean_difference", "difference_standard_error",
               "share_gradcam_below_random", "cam_seconds", "faithfulness_seconds"]
    print("\nDeletion AUC (class probability as salient pixels are blanked; lower is "
          "better)")
    _common.print_table(rows, columns)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "shown_images": [str(Path(p).relative_to(Path(args.data))) for p in shown],
        "rows": rows,
    }
    path = _common.write_results("bench_cam", results, args.out)
    print(f"\nfigures: {', '.join(row['figure'] for row in rows)}\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
