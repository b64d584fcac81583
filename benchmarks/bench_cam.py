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
    ``--fine-tune-epochs``, the frozen-prefix cache on) or loaded from
    ``--finetuner``; ``--models DIR`` saves both (or loads them when saved). Every
    method explains the predicted class on block5_conv3. The gradient methods
    (Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM) run first, for both models,
    on ``--images`` test images (every k-th file, both classes): deletion and
    insertion AUC (``cam_metrics``, ``--steps`` steps) on all of them, ROAD (at
    ``--percentiles``) and average drop / increase in confidence on
    ``--road-images`` of them (ROAD's imputation and forward passes cost about as
    much as both curves together). EigenCAM and the aug_smooth and SmoothGrad variants run on
    ``--smoothed-images`` of the ROAD images, Score-CAM and Ablation-CAM on
    ``--expensive-images`` of those, trying ``--max-channels`` channels per image.
    One random saliency map per image (drawn with the first method's metrics) is
    the baseline of all methods, averaged over the images each metric measured. An
    overlay grid (rows = images, columns = methods) per model goes to
    ``docs/images/``. Then ``--memory-calls`` (50) ``cam`` calls on 4 images, RSS
    read before and after.

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
from sklearn.utils import Bunch

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
MODELS = ("finetuner", "logreg_pipeline")
# (column name, cam keywords)
METHODS = (
    ("gradcam", {"method": "gradcam"}),
    ("gradcam++", {"method": "gradcam++"}),
    ("hirescam", {"method": "hirescam"}),
    ("xgradcam", {"method": "xgradcam"}),
    ("layercam", {"method": "layercam"}),
    ("gradcam+aug_smooth", {"method": "gradcam", "aug_smooth": True}),
    ("layercam+aug_smooth", {"method": "layercam", "aug_smooth": True}),
    ("gradcam+smoothgrad", {"method": "gradcam", "n_samples": 8}),
    ("layercam+smoothgrad", {"method": "layercam", "n_samples": 8}),
    ("eigencam", {"method": "eigencam"}),
    ("scorecam", {"method": "scorecam"}),
    ("ablationcam", {"method": "ablationcam"}),
)
# The methods the benchmark is for: on every image, measured first.
GRADIENT = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam")
# One forward pass per channel and image: run on --expensive-images only.
EXPENSIVE = ("scorecam", "ablationcam")
# Every other method (EigenCAM; aug_smooth and SmoothGrad, 4 or 8 gradient passes
# per image) runs on --smoothed-images.
METRIC_COLUMNS = ("deletion", "insertion", "road", "confidence")
# ROAD's imputation and forward passes cost about as much as both curves together:
# on --road-images only.
ROAD_METRICS = ("road", "confidence", "increase")


def fit_models(args, weights):
    """Both fitted models; with ``--models DIR``, loaded from there when saved by an
    earlier run (else fitted and saved), so a timing run and the full run share them."""
    saved = Path(args.models) if args.models else None
    if saved and all((saved / f"{name}.joblib").is_file() for name in MODELS):
        models = {name: joblib.load(saved / f"{name}.joblib") for name in MODELS}
        return models, {name: None for name in MODELS}
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
    models = {"finetuner": tuner, "logreg_pipeline": pipeline}
    if saved:
        saved.mkdir(parents=True, exist_ok=True)
        for name, model in models.items():
            joblib.dump(model, saved / f"{name}.joblib")
    return models, fit_seconds


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
            heatmap = heatmaps_by_method[name][i]
            if heatmap is not None:  # None: not an image this method ran on
                axes[i, j].imshow(overlay(picture, heatmap))
            axes[0, j].set_title(name, fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    figure.savefig(path, dpi=80)


def spread(n, count):
    """``count`` indices spread over ``range(n)`` (both classes: files are sorted)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(int))


def measured_rows(metric, rows, road_rows):
    return road_rows if metric in ROAD_METRICS else rows


def random_by_image(scores, rows, road_rows, n_images):
    """The random maps' score per image (NaN for images not measured)."""
    columns = {metric: scores[metric].random for metric in METRIC_COLUMNS}
    columns["increase"] = scores.confidence.random_increase
    by_image = {}
    for name, values in columns.items():
        by_image[name] = np.full(n_images, np.nan)
        by_image[name][measured_rows(name, rows, road_rows)] = values
    return by_image


def random_columns(random_scores, rows, road_rows):
    """The random baseline's means over the images each metric measured."""
    return {f"random_{name}": float(values[measured_rows(name, rows, road_rows)].mean())
            for name, values in random_scores.items()}


def method_row(scores, random_scores, rows, road_rows, seconds, metric_seconds):
    row = {"images": len(rows), "road_images": len(road_rows),
           "seconds_per_image": seconds / len(rows),
           "metric_seconds_per_image": metric_seconds / len(rows)}
    for metric in METRIC_COLUMNS:
        row[metric] = scores[metric].mean
    row["increase"] = scores.confidence.mean_increase
    row.update(random_columns(random_scores, rows, road_rows))
    row["beats_random_deletion"] = row["deletion"] < row["random_deletion"]
    row["beats_random_insertion"] = row["insertion"] > row["random_insertion"]
    for metric in METRIC_COLUMNS:
        row[f"{metric}_per_image"] = scores[metric].score.round(4).tolist()
    return row


def measure_method(model, images, rows, road_rows, keywords, random_scores, args):
    """One method's row: ``cam`` on ``rows``, deletion and insertion there, ROAD and
    confidence on ``road_rows``; the random maps are measured too when
    ``random_scores`` is None (the row then carries them as ``random_baseline``)."""
    measure_random = random_scores is None
    heatmaps, seconds = _common.timed(
        cam, model, images[rows], **keywords, max_channels=args.max_channels)
    scores, metric_seconds = Bunch(), 0.0
    for metrics, measured in ((("deletion", "insertion"), rows),
                              (("road", "confidence"), road_rows)):
        maps = [heatmaps[k] for k in np.flatnonzero(np.isin(rows, measured))]
        part, part_seconds = _common.timed(
            cam_metrics, model, images[measured], maps, metrics=metrics,
            steps=args.steps, percentiles=args.percentiles, random_state=0,
            random_baseline=measure_random)
        scores.update({metric: part[metric] for metric in metrics})
        metric_seconds += part_seconds
    if measure_random:
        random_scores = random_by_image(scores, rows, road_rows, len(images))
    row = method_row(scores, random_scores, rows, road_rows, seconds, metric_seconds)
    if measure_random:
        row["random_baseline"] = {  # None: an image ROAD did not measure
            metric: [None if np.isnan(value) else value for value in values.round(4).tolist()]
            for metric, values in random_scores.items()}
    return row, heatmaps, random_scores


def measure_memory(model, images, calls=50):
    """RSS before and after ``calls`` cam() calls on 4 images, after a warm-up call."""
    cam(model, images[:4])
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(calls):
        cam(model, images[:4])
    gc.collect()
    after = rss_mb()
    return {"calls": calls, "images_per_call": 4, "rss_before_mb": before,
            "rss_after_mb": after, "growth_mb": after - before,
            "seconds": time.perf_counter() - start}


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--image-size", type=int, default=150)
    arguments.add_argument("--finetuner", metavar="FILE",
                           help="a fitted FineTuner saved with joblib.dump")
    arguments.add_argument("--models", metavar="DIR",
                           help="load both fitted models from DIR, or fit and save them there")
    arguments.add_argument("--head-epochs", type=int, default=5)
    arguments.add_argument("--fine-tune-epochs", type=int, default=1)
    arguments.add_argument("--limit", type=int, default=600, help="training images")
    arguments.add_argument("--images", "--faithfulness-images", dest="images", type=int,
                           default=20, help="test images measured")
    arguments.add_argument("--smoothed-images", type=int,
                           help="EigenCAM and the aug_smooth and SmoothGrad variants on this "
                           "many of the ROAD images (default: all)")
    arguments.add_argument("--expensive-images", type=int,
                           help="Score-CAM and Ablation-CAM on this many of those "
                           "(default: all)")
    arguments.add_argument("--road-images", type=int,
                           help="ROAD and confidence on this many of them, for every "
                           "method (default: all)")
    arguments.add_argument("--show", type=int, default=4, help="test images in the grid")
    arguments.add_argument("--steps", type=int, default=10)
    arguments.add_argument("--percentiles", type=float, nargs="+", default=[20, 50, 80])
    arguments.add_argument("--max-channels", type=int, default=32)
    arguments.add_argument("--methods", nargs="+", default=[name for name, _ in METHODS])
    arguments.add_argument("--memory-calls", type=int, default=50)
    arguments.add_argument("--figures", default=str(DOCS_IMAGES))
    args = arguments.parse_args(argv)
    weights = _common.weights_argument(args.weights)
    methods = [(name, kw) for name, kw in METHODS if name in args.methods]

    models, fit_seconds = fit_models(args, weights)
    images, labels = load_split(args.data, "test", args.images)
    images = np.asarray(images)
    # Nested subsets, so the grid's images have every method's heatmap.
    road_subset = spread(len(images), args.road_images)
    smoothed_rows = road_subset[spread(len(road_subset), args.smoothed_images)]
    expensive_rows = smoothed_rows[spread(len(smoothed_rows), args.expensive_images)]
    shown_rows = expensive_rows[spread(len(expensive_rows), args.show)]
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "fit_seconds": fit_seconds,
        "shown_images": [str(Path(p).relative_to(Path(args.data)))
                         for p in images[shown_rows]],
        "smoothed_images": [str(Path(p).relative_to(Path(args.data)))
                            for p in images[smoothed_rows]],
        "expensive_images": [str(Path(p).relative_to(Path(args.data)))
                             for p in images[expensive_rows]],
        "road_images": [str(Path(p).relative_to(Path(args.data)))
                        for p in images[road_subset]],
        "accuracy": {}, "random_baselines": {}, "rows": [], "memory": None,
        "complete": False,
    }
    for model_name, model in models.items():
        results["accuracy"][model_name] = float(np.mean(model.predict(images) == labels))
    # One random saliency map per image and model, drawn with the first method's
    # metrics: the baseline of every method (on the images each ran on).
    random_scores = dict.fromkeys(models)
    grids = {model_name: {} for model_name in models}
    # The gradient methods on every image first, for both models: the rows the
    # run is for land first in the checkpoints.
    first = [method for method in methods if method[0] in GRADIENT]
    rest = [method for method in methods if method not in first]
    for phase in (first, rest):
        for model_name, model in models.items():
            for name, keywords in phase:
                rows = (np.arange(len(images)) if name in GRADIENT else
                        expensive_rows if name in EXPENSIVE else smoothed_rows)
                road_rows = rows[np.isin(rows, road_subset)]
                row, heatmaps, random_scores[model_name] = measure_method(
                    model, images, rows, road_rows, keywords, random_scores[model_name],
                    args)
                row = {"model": model_name, "method": name, **row}
                if "random_baseline" in row:
                    results["random_baselines"][model_name] = {
                        "measured_with": name, **row.pop("random_baseline")}
                baseline = results["random_baselines"][model_name]
                row["metric_seconds_include_random"] = baseline["measured_with"] == name
                grids[model_name][name] = [
                    heatmaps[list(rows).index(i)] if i in rows else None
                    for i in shown_rows]
                results["rows"].append(row)
                print({k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in row.items()
                       if not k.endswith("per_image") or k.startswith(("seconds", "metric"))},
                      flush=True)
                _common.write_results("bench_cam", results, args.out)  # a checkpoint
    order = {(model_name, name): i for i, (model_name, (name, _)) in enumerate(
        (model_name, method) for model_name in models for method in methods)}
    results["rows"].sort(key=lambda row: order[row["model"], row["method"]])
    for model_name, grid in grids.items():
        grid = {name: grid[name] for name, _ in methods}
        overlay_grid(images[shown_rows], grid, figures / f"cam_methods_{model_name}.png")

    memory = measure_memory(models["logreg_pipeline"], images, args.memory_calls)
    results["memory"] = memory
    results["complete"] = True
    print(f"\nRSS over {memory['calls']} cam() calls: {memory['rss_before_mb']:.0f} -> "
          f"{memory['rss_after_mb']:.0f} MB (+{memory['growth_mb']:.1f} MB)")
    columns = ["model", "method", "images", "deletion", "random_deletion", "insertion",
               "random_insertion", "road", "random_road", "confidence",
               "random_confidence", "increase", "random_increase", "seconds_per_image"]
    _common.print_table(results["rows"], columns)
    return _common.save_results("bench_cam", results, args.out)


if __name__ == "__main__":
    main()
