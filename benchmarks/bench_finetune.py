"""Fine-tuning VGG16's block5 on a 2-core CPU: accuracy, wall time, and what the
frozen-prefix cache saves per epoch.

Question
    With the frozen-prefix cache and no augmentation, does ``FineTuner(unfreeze=1)``
    beat frozen features + LogisticRegression (about 0.96 test here) and reach the
    book's 0.97, in under 30 minutes on this CPU? How much faster is a cached epoch of
    phase 2 than the same epoch end to end (goal: >= 5x)?

Setup
    cats_and_dogs_small (2000 train / 1000 validation / 1000 test, the book's split),
    ImageNet VGG16 base (the shared weights file), RMSprop, batch 20.
    Accuracy run at ``--image-size`` (default 224, VGG16's native resolution; 150
    is the book's): phase 1, the head on the frozen base (lr 2e-5); phase 2, block5 +
    head (lr 1e-5); early stopping on validation/ with best-weight restore.
    Timing at ``--timing-image-size`` (150): the same FineTuner on
    ``--timing-images`` training images, cache on vs off, median phase-2 epoch time
    after the first (tracing) epoch, for an epoch of training only and for an epoch
    that also validates on half as many validation/ images (the accuracy run's 2:1).
    flop_bound is the best any exact cache can do: it saves the frozen prefix's
    forward pass (block1-4, 12.08 of 13.23 GFLOP per image at 150x150) but block5
    still runs forward and backward (``count_flops``; the backward of block5_conv1
    needs no input gradient: 1x its forward, the other two convs 2x).

Published reference
    Chollet, *Deep Learning with Python* §5.3.2: fine-tuning block5 with data
    augmentation, 100 epochs (on a GPU) -> about 0.97 validation and test accuracy.
"""

import sys
import time
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import load_split  # noqa: E402

from sklearn_convfeat import FineTuner, count_flops  # noqa: E402


def accuracy_run(args, weights, save=None):
    train = load_split(args.data, "train", args.limit)
    validation = load_split(args.data, "validation", args.limit)
    test = load_split(args.data, "test", args.limit)
    tuner = FineTuner(
        weights=weights,
        unfreeze=1,
        image_size=args.image_size,
        augment=False,
        cache="auto",
        head_epochs=args.head_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        early_stopping=True,
        n_iter_no_change=args.patience,
        random_state=0,
        verbose=2,
    )
    start = time.perf_counter()
    tuner.fit(*train, validation_data=validation)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    validation_accuracy = tuner.score(*validation)
    test_accuracy = tuner.score(*test)
    score_seconds = time.perf_counter() - start
    if save:  # e.g. for bench_cam.py --finetuner
        joblib.dump(tuner, save)
    history = tuner.history_
    return {
        "unfreeze": 1,
        "cache": tuner.cache_,
        "train_images": len(train[0]),
        "head_epochs_run": tuner.fine_tune_start_,
        "fine_tune_epochs_run": len(history["phase"]) - tuner.fine_tune_start_,
        "validation_accuracy": validation_accuracy,
        "test_accuracy": test_accuracy,
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "total_seconds": fit_seconds + score_seconds,
        "history": history,
    }


def flop_bound(image_size, validation_ratio):
    """Phase-2 epoch FLOPs end to end / cached, for unfreeze=1."""
    prefix = count_flops("block4_pool", image_size)
    block5 = count_flops("block5_pool", image_size) - prefix
    train_block5 = block5 * (1 + 5 / 3)  # forward, then backward (see Setup)
    end_to_end = prefix + train_block5 + validation_ratio * (prefix + block5)
    cached = train_block5 + validation_ratio * block5
    return end_to_end / cached


def epoch_timing(args, weights):
    size = args.timing_image_size
    paths, labels = load_split(args.data, "train", args.timing_images)
    validation = load_split(args.data, "validation", args.timing_images // 2)
    rows = []
    for epoch in ("train only", "train + validation"):
        timings = {}
        for cache in ("auto", None):
            tuner = FineTuner(
                weights=weights, unfreeze=1, image_size=size, cache=cache,
                head_epochs=1, fine_tune_epochs=3, random_state=0,
            ).fit(paths, labels,
                  validation_data=validation if epoch != "train only" else None)
            seconds = np.asarray(tuner.history_["epoch_seconds"])
            phases = np.asarray(tuner.history_["phase"])
            timings["cached" if cache else "end_to_end"] = {
                "phase1": float(seconds[phases == 1][0]),
                "phase2": float(np.median(seconds[phases == 2][1:])),
            }
        ratio = len(validation[0]) / len(paths) if epoch != "train only" else 0.0
        rows.append({
            "epoch": epoch,
            "train_images": len(paths),
            "validation_images": int(round(ratio * len(paths))),
            "end_to_end_phase2_seconds": timings["end_to_end"]["phase2"],
            "cached_phase2_seconds": timings["cached"]["phase2"],
            "phase2_speedup": timings["end_to_end"]["phase2"] / timings["cached"]["phase2"],
            "flop_bound": flop_bound((size, size), ratio),
            "phase1_speedup": timings["end_to_end"]["phase1"] / timings["cached"]["phase1"],
        })
    return {"image_size": size, "rows": rows}


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--image-size", type=int, default=224,
                           help="of the accuracy run (default 224)")
    arguments.add_argument("--timing-image-size", type=int, default=150)
    arguments.add_argument("--head-epochs", type=int, default=30)
    arguments.add_argument("--fine-tune-epochs", type=int, default=15)
    arguments.add_argument("--patience", type=int, default=3)
    arguments.add_argument("--timing-images", type=int, default=200)
    arguments.add_argument("--limit", type=int, help="images per split (smoke runs)")
    arguments.add_argument("--skip-accuracy", action="store_true")
    arguments.add_argument("--save", metavar="FILE", help="joblib.dump the fitted FineTuner")
    arguments.add_argument("--skip-timing", action="store_true")
    args = arguments.parse_args(argv)
    weights = _common.weights_argument(args.weights)

    results = {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    if not args.skip_timing:
        results["timing"] = timing = epoch_timing(args, weights)
        size = timing["image_size"]
        print(f"\nPhase-2 epoch time, unfreeze=1, at {size}x{size}: end to end vs "
              "frozen-prefix cache (goal: >= 5x)")
        _common.print_table(timing["rows"], list(timing["rows"][0]))
    if not args.skip_accuracy:
        results["accuracy"] = run = accuracy_run(args, weights, args.save)
        print(f"\nFineTuner(unfreeze=1, cache, no augmentation) at "
              f"{args.image_size}x{args.image_size}")
        _common.print_table(
            [run],
            ["train_images", "head_epochs_run", "fine_tune_epochs_run",
             "validation_accuracy", "test_accuracy", "fit_seconds", "total_seconds"],
        )
    return _common.save_results("bench_finetune", results, args.out)


if __name__ == "__main__":
    main()
