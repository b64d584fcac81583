"""CAM methods on real photographs: where do the fine-tuned VGG16 and the frozen-feature
LogisticRegression look, and which method's heatmaps point at what the models use?

Question
    For ``cats_and_dogs_small`` test images and the real ImageNet weights, for each
    ``cam`` method: are its heatmaps faithful, i.e. better than random saliency on
    deletion AUC (lower is better), insertion AUC (higher), ROAD's LeRF − MoRF gap
    (higher), average drop (lower) and increase in confidence (higher)? At what cost
    in seconds per image? And does ``cam`` leak memory over 50 calls?

Setup
    Both models are fitted on ``--limit`` train/ images (every k-th, both classes;
    150x150, ``preprocessing="vgg16"``): the LogisticRegression pipeline on
    block5_pool features; the FineTuner with short phases (``--head-epochs``,
    ``--fine-tune-epochs``) or loaded from ``--finetuner``. Every method explains the
    predicted class on block5_conv3. Metrics on ``--images`` test images (every k-th
    file, both classes), ``cam_metrics`` with ``--steps`` deletion/insertion steps
    and ROAD at ``--percentiles``; one random saliency map per image is the baseline
    of all methods. Score-CAM and Ablation-CAM try ``--max-channels`` channels per
    image. An overlay grid (rows = images, columns = methods) per model goes to
    ``docs/images/``. Then 50 ``cam`` calls on 4 images, RSS read before and after.

Published reference
    Petsiuk et al. (RISE, BMVC 2018), ResNet50 on ImageNet: Grad-CAM deletion 0.123,
    insertion 0.677. Chattopadhay et al. (Grad-CAM++, WACV 2018), VGG16 on ImageNet:
    average drop 46.6 % (Grad-CAM) vs 36.8 % (Grad-CAM++), increase in confidence
    13.4 % vs 17.1 %. Wang et al. (Score-CAM): average drop 31.5 %, increase 30.6 %.
"""

import gc
import sys
import time
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import load_split
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_convfeat import (
    ConvFeatureExtractor,
    FineTuner,
    cam,
    cam_metrics,
    overlay,
)

DOCS_IMAGES = _common.REPO / "docs" / "images"
# (column name, cam keywords)
METHODS = (
    ("gradcam", {"method": "gradcam"}),
    ("gradcam++", {"method": "gradcam++"}),
    ("hirescam", {"method": "hirescam"}),
    ("xgradcam", {"method": "xgradcam"}),
    ("layercam", {"method": "layercam"}),
    ("gradcam+aug_smooth", {"method": "gradcam", "aug_smooth": True}),
    ("eigencam", {"method": "eigencam"}),
    ("scorecam", {"method": "scorecam"}),
    ("ablationcam", {"method": "ablationcam"}),
)
METRIC_COLUMNS = ("deletion", "insertion", "road", "confidence")


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


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def overlay_grid(images, heatmaps_by_method, path):
    from matplotlib.figure import Figure
    from PIL import Image

    names = list(heatmaps_by_method)
    figure = Figure(figsize=(1.9 * (len(names) + 1), 1.9 * len(images)), layout="constrained")
    axes = figure.subplots(len(images), len(names) + 1, squeeze=False)
    for i, image in enumerate(images):
        with Image.open(image) as opened:
            picture = np.asarray(opened.convert("RGB"))
        axes[i, 0].imshow(picture)
        axes[0, 0].set_title("image", fontsize=8)
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(overlay(picture, heatmaps_by_method[name][i]))
            axes[0, j].set_title(name, fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    figure.savefig(path, dpi=80)


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--image-size", type=int, default=150)
    arguments.add_argument("--finetuner", metavar="FILE",
                           help="a fitted FineTuner saved with joblib.dump")
    arguments.add_argument("--head-epochs", type=int, default=5)
    arguments.add_argument("--fine-tune-epochs", type=int, default=1)
    arguments.add_argument("--limit", type=int, default=600, help="training images")
    arguments.add_argument("--images", "--faithfulness-images", dest="images", type=int,
                           default=20, help="test images measured")
    arguments.add_argument("--show", type=int, default=4, help="test images in the grid")
    arguments.add_argument("--steps", type=int, default=10)
    arguments.add_argument("--percentiles", type=float, nargs="+", default=[20, 50, 80])
    arguments.add_argument("--max-channels", type=int, default=32)
    arguments.add_argument("--methods", nargs="+", default=[name for name, _ in METHODS])
    arguments.add_argument("--figures", default=str(DOCS_IMAGES))
    args = arguments.parse_args(argv)
    weights = _common.weights_argument(args.weights)
    methods = [(name, kw) for name, kw in METHODS if name in args.methods]

    models, fit_seconds = fit_models(args, weights)
    images, labels = load_split(args.data, "test", args.images)
    shown = images[:: max(1, len(images) // args.show)][: args.show]
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    rows = []
    for model_name, model in models.items():
        accuracy = float(np.mean(model.predict(images) == labels))
        random_scores = None
        grid = {}
        for name, keywords in methods:
            options = {**keywords, "max_channels": args.max_channels}
            heatmaps, seconds = _common.timed(cam, model, images, **options)
            grid[name] = [heatmaps[list(images).index(path)] for path in shown]
            scores, metric_seconds = _common.timed(
                cam_metrics, model, images, heatmaps, steps=args.steps,
                percentiles=args.percentiles, random_state=0,
                random_baseline=random_scores is None,
            )
            if random_scores is None:
                random_scores = scores
            row = {"model": model_name, "method": name, "images": len(images),
                   "test_accuracy_on_these": accuracy,
                   "seconds_per_image": seconds / len(images),
                   "metric_seconds": metric_seconds}
            for metric in METRIC_COLUMNS:
                row[metric] = scores[metric].mean
                row[f"random_{metric}"] = random_scores[metric].random_mean
                row[f"{metric}_per_image"] = scores[metric].score.round(4).tolist()
            row["increase"] = scores.confidence.mean_increase
            row["random_increase"] = random_scores.confidence.random_mean_increase
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                   if not k.endswith("per_image")}, flush=True)
        figure_path = figures / f"cam_methods_{model_name}.png"
        overlay_grid(shown, grid, figure_path)

    # Memory: 50 calls in this process, after a warm-up call.
    model = models["logreg_pipeline"]
    cam(model, images[:4])
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(50):
        cam(model, images[:4])
    gc.collect()
    after = rss_mb()
    memory = {"calls": 50, "images_per_call": 4, "rss_before_mb": before,
              "rss_after_mb": after, "growth_mb": after - before,
              "seconds": time.perf_counter() - start}
    print(f"\nRSS over 50 cam() calls: {before:.0f} -> {after:.0f} MB "
          f"(+{after - before:.1f} MB)")
    columns = ["model", "method", "deletion", "random_deletion", "insertion",
               "random_insertion", "road", "random_road", "confidence",
               "random_confidence", "increase", "random_increase", "seconds_per_image"]
    _common.print_table(rows, columns)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "fit_seconds": fit_seconds,
        "shown_images": [str(Path(p).relative_to(Path(args.data))) for p in shown],
        "rows": rows,
        "memory": memory,
    }
    path = _common.write_results("bench_cam", results, args.out)
    print(f"\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
