"""Backbones compared: images/s, FLOPs, parameters and memory of ConvFeatureExtractor
for a dozen keras.applications convnets, on each backend.

Question
    What does each backbone cost on this CPU when used as a frozen feature extractor,
    end to end from JPEG paths (decode, resize, forward) and from decoded arrays
    (forward only), on each backend (TensorFlow, ONNX Runtime, OpenVINO, OpenVINO
    INT8)? How do images/s follow the FLOPs per image, and what memory does each take?
    Issue 13's targets, printed as met / not met: on TensorFlow at 224 px from paths,
    MobileNetV3Large >= 10x VGG16's images/s, EfficientNetB0 >= 10x, ConvNeXtTiny
    >= 1x.

Setup
    ``--backbones`` (VGG16, ResNet50, ResNet50V2, MobileNetV2, MobileNetV3Large,
    EfficientNetB0, EfficientNetV2B0, ConvNeXtTiny, DenseNet121, Xception,
    InceptionV3, NASNetMobile), each
    ``ConvFeatureExtractor(backbone=B, weights=None, random_state=0, image_size=S,
    layer=5, pooling="avg", batch_size=32, backend=...)``: the whole base (stage 5 is
    its end), global average pooled, seeded random weights. Speed does not depend on
    the weight values, so every row says ``"weights": "random (seeded); ..."``; no
    download is needed. S in ``--sizes`` (224 and ``native``: each network's own
    size, 299 for Xception and InceptionV3; a native size of 224 is measured once).
    Backends (``--backends``, default every one whose packages are installed):
    tensorflow, onnxruntime, openvino, openvino-int8 (``quantize="int8"``,
    calibrated in ``fit`` on the timed images themselves: the INT8 graph, and so its
    speed, does not depend on what it was calibrated on). Exports and calibration
    happen in ``fit`` (or come from the disk cache, ``$KERAS_HOME/sklearn_convfeat``,
    up to a few hundred MB per backbone and size) and are never timed.
    Inputs: ``--images`` (96) images of cats_and_dogs_small/train, evenly spaced,
      paths   the JPEG paths: ``transform`` decodes and resizes them in its background
              thread while the base runs: the end-to-end rate;
      arrays  the same images decoded and resized to SxS beforehand (float32,
              ``load_images``): the forward pass and its per-batch overhead only.
    Every (backbone, backend) runs in a fresh process (this script with the hidden
    ``--child``), so memory is per backbone and backend and nothing one network
    leaves behind (threads, caches, allocator state) slows the next. The process
    fits, makes one warm-up call per size and input (tracing, compiling, first
    allocations), then times one ``transform`` of every size and input. That is one
    round; ``--repeats`` (2) rounds run every (backbone, backend) process in a fixed
    interleaved order, so background load hits all alike; images/s is the images
    over the median round's seconds.
    Columns: gflops (``count_flops(5, S, backbone=B)``: 2 x multiply-adds per
    image), gflop_per_s (images/s x gflops: how well the backend feeds the CPU),
    params (the base's parameters), rss_loaded_mb (resident memory after fit and the
    warm-up from paths: runtime, base, compiled forward), transform_peak_mb (peak
    resident memory during the timed calls, /proc/self VmHWM reset just before;
    includes the decoded arrays, 96 x S x S x 3 float32 = 58 MB at 224). Memory is
    the largest over the rounds. Every backend's process also holds the TensorFlow
    runtime and the Keras base, which ``fit`` builds for every backend.
    Accuracy (``--accuracy``, off by default; in this process, after the speed
    rounds): VGG16 with the ``--weights`` file (the real ImageNet base; skipped if
    there is none), avg-pooled block5_pool features of ``--accuracy-images`` (2000)
    train images at ``--accuracy-size`` (150) px, LogisticRegression, accuracy on the
    1000 test images. ``--accuracy-only`` skips the speed rounds.
    ``--accuracy-backbones`` adds others with ``weights="imagenet"``: Keras' cache
    (``~/.keras/models``), a download, or the folder SKLEARN_CONVFEAT_WEIGHTS names;
    one whose weights cannot be had is skipped, with the reason, in the results.
    ``--quick``: VGG16 and MobileNetV3Large, 16 images, 1 round, TensorFlow only (a
    smoke run, not a measurement).

Published reference
    Issue 13, measured on this CPU (2 cores, AVX2) with plain Keras
    ``model.predict_on_batch`` on batches of 32 decoded arrays at 224 px, random
    weights: VGG16 7.3 images/s, MobileNetV3Large 134, EfficientNetB0 66,
    EfficientNetV2B0 78, ResNet50 19, ConvNeXtTiny 3.4. The table's ``reference``
    column puts them beside the TensorFlow rows from arrays at 224 px.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import bench_memory  # noqa: E402
import bench_throughput  # noqa: E402

import sklearn_convfeat  # noqa: E402
from sklearn_convfeat import (  # noqa: E402
    BACKBONES,
    ConvFeatureExtractor,
    count_flops,
    load_images,
)

DEFAULT_BACKBONES = [
    "VGG16", "ResNet50", "ResNet50V2", "MobileNetV2", "MobileNetV3Large",
    "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "DenseNet121", "Xception",
    "InceptionV3", "NASNetMobile",
]
QUICK = {"backbones": ["VGG16", "MobileNetV3Large"], "images": 16, "repeats": 1,
         "backends": ["tensorflow"]}
BACKENDS = bench_throughput.EXTRACTOR_BACKENDS  # name -> (parameters, modules needed)
INPUTS = ("paths", "arrays")
LAYER, POOLING = 5, "avg"
WEIGHTS_NOTE = "random (seeded); speed does not depend on weight values"
# Issue 13: backbone -> least images/s as a multiple of VGG16's (TensorFlow, 224 px,
# from paths).
TARGETS = {"MobileNetV3Large": 10.0, "EfficientNetB0": 10.0, "ConvNeXtTiny": 1.0}
TARGET_SETTING = {"backend": "tensorflow", "image_size": 224, "input": "paths"}
# Issue 13: plain Keras predict_on_batch, batch 32, arrays, 224 px, random weights.
REFERENCE = {"VGG16": 7.3, "MobileNetV3Large": 134, "EfficientNetB0": 66,
             "EfficientNetV2B0": 78, "ResNet50": 19, "ConvNeXtTiny": 3.4}
REFERENCE_SETTING = {"backend": "tensorflow", "image_size": 224, "input": "arrays"}
COLUMNS = ["backbone", "backend", "image_size", "input", "images_per_second",
           "reference", "gflops", "gflop_per_s", "params_m", "rss_loaded_mb",
           "transform_peak_mb"]
CHILD_TIMEOUT_S = 3600


def parse_sizes(tokens):
    """``["224,native"]`` or ``["224", "native"]`` -> ``[224, None]`` (None: native)."""
    sizes = []
    for token in tokens:
        for part in filter(None, token.split(",")):
            if part.strip().lower() == "native":
                sizes.append(None)
            elif part.strip().isdigit():
                sizes.append(int(part))
            else:
                raise argparse.ArgumentTypeError(
                    f"`--sizes` takes pixel counts and 'native', comma- or "
                    f"space-separated. Got {part!r} instead."
                )
    return list(dict.fromkeys(sizes))


def resolve_backbones(names):
    """keras.applications spellings of ``names`` (matched as ``backbone`` matches)."""
    by_key = {"".join(c for c in name.lower() if c.isalnum()): name for name in BACKBONES}
    resolved = []
    for name in names:
        key = "".join(c for c in name.lower() if c.isalnum())
        if key not in by_key:
            raise SystemExit(
                f"--backbones: {name!r} is not a keras.applications convnet; one of "
                f"{', '.join(BACKBONES)}."
            )
        resolved.append(by_key[key])
    return resolved


# --- the child process: one backbone on one backend ----------------------------------


def make_extractor(backbone, backend, size, batch_size):
    parameters, _ = BACKENDS[backend]
    return ConvFeatureExtractor(
        backbone=backbone, weights=None, random_state=0, image_size=size,
        layer=LAYER, pooling=POOLING, batch_size=batch_size, **parameters,
    )


def distinct_sizes(backbone, sizes, paths):
    """``{key: size}`` of the requested sizes that differ once ``None`` is read as the
    native size (224 and a native 224 are measured once, as 224), and ``{key: True if
    it is the native size, None if not known}``. A TensorFlow fit tells the native
    size: it exports and calibrates nothing."""
    chosen, native, pixels_of = {}, {}, {}
    for size in sizes:
        key = "native" if size is None else size
        pixels = size if size is not None else make_extractor(
            backbone, "tensorflow", None, 1).fit(paths[:1]).image_size_[0]
        first = next((other for other, seen in pixels_of.items() if seen == pixels),
                     None)
        if first is not None:
            native[first] = native[first] or size is None
            continue
        chosen[key], native[key], pixels_of[key] = size, True if size is None else None, pixels
    return chosen, native


def measure_child(args):
    """In a fresh process: one round of every size and input of one backbone and
    backend, with its memory (and, with ``--facts``, its FLOPs and parameters)."""
    paths, _ = _common.load_split(args.data, "train", args.images)
    extractors, errors = {}, {}
    sizes, native = distinct_sizes(args.child, args.sizes, paths)
    for key, size in sizes.items():
        try:
            extractors[key] = make_extractor(args.child, args.child_backend, size,
                                             args.batch_size).fit(paths)
        except Exception as exc:  # noqa: BLE001  reported as this size's error
            errors[key] = f"{type(exc).__name__}: {exc}"[:2000]
    for extractor in extractors.values():  # tracing, compiling, decoder thread
        extractor.transform(paths[: args.batch_size])
    rss_loaded = bench_memory.status_mb("VmRSS") or bench_memory.ru_maxrss_mb()
    arrays = {key: load_images(paths, image_size=extractor.image_size_)
              for key, extractor in extractors.items()} if "arrays" in args.inputs else {}
    for key, images in arrays.items():
        extractors[key].transform(images[: args.batch_size])
    peak_reset = bench_memory.reset_peak_rss()
    methods = []
    for key, extractor in extractors.items():
        for kind in args.inputs:
            images = paths if kind == "paths" else arrays[key]
            _, seconds = _common.timed(extractor.transform, images)
            methods.append({"size": key, "image_size": extractor.image_size_[0],
                            "input": kind, "seconds": seconds})
    peak = bench_memory.status_mb("VmHWM") if peak_reset else bench_memory.ru_maxrss_mb()
    facts = {}
    for key, extractor in extractors.items():
        facts[key] = {"image_size": extractor.image_size_[0], "native": native[key],
                      "preprocessing": extractor.preprocessing_,
                      "layer": extractor.layer_, "n_features": extractor.n_features_out_}
        if args.facts:
            try:
                facts[key]["gflops"] = count_flops(
                    LAYER, extractor.image_size_, backbone=args.child) / 1e9
            except Exception as exc:  # noqa: BLE001  the timings still count
                errors[f"count_flops {key}"] = f"{type(exc).__name__}: {exc}"[:2000]
    if args.facts and extractors:
        # The base that ran, not a copy: the extractor's own (shared) Keras model.
        from sklearn_convfeat._extractor import tensorflow_runner

        facts["params"] = tensorflow_runner(
            next(iter(extractors.values()))).model.count_params()
    return {"images": len(paths), "methods": methods, "errors": errors, "facts": facts,
            "rss_loaded_mb": rss_loaded, "transform_peak_mb": peak}


def child_environment():
    """This environment, importing the same sklearn_convfeat as this process."""
    package_root = str(Path(sklearn_convfeat.__file__).resolve().parents[1])
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                        os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def run_child(args, backbone, backend, facts):
    """``measure_child`` for (backbone, backend) in a fresh process; failures come
    back as ``{"failed": message}``."""
    sizes = ",".join("native" if size is None else str(size) for size in args.sizes)
    command = [
        sys.executable, __file__, "--child", backbone, "--child-backend", backend,
        "--data", str(args.data), "--images", str(args.images), "--sizes", sizes,
        "--batch-size", str(args.batch_size), "--inputs", *args.inputs,
    ] + (["--facts"] if facts else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              env=child_environment(), timeout=args.child_timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.child_timeout} s"}
    if done.returncode:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"failed": f"exit {done.returncode}: " + " | ".join(tail[-3:])[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent: rounds, rows, targets ----------------------------------------------


def measure(args):
    """Every (backbone, backend) child, ``--repeats`` interleaved rounds; the per-run
    results grouped by (backbone, backend)."""
    runs = {(backbone, backend): [] for backbone in args.backbones
            for backend in args.backends}
    for round_index in range(args.repeats):
        for (backbone, backend), done in runs.items():
            # FLOPs and parameters once per backbone, after its first timed round.
            facts = round_index == 0 and backend == args.backends[0]
            result = run_child(args, backbone, backend, facts)
            status = result.get("failed") or ", ".join(
                f"{m['image_size']}px {m['input']} {m['seconds']:.1f}s"
                for m in result["methods"])
            print(f"round {round_index + 1}/{args.repeats} {backbone:17s} "
                  f"{backend:13s} {status}", flush=True)
            done.append(result)
    return runs


def summarize(runs):
    """One row per (backbone, backend, size, input), and each backbone's failures."""
    facts, rows, failures = {}, [], []
    for (backbone, _), results in runs.items():
        for result in results:
            facts.setdefault(backbone, {})
            for key, value in result.get("facts", {}).items():
                if isinstance(value, dict):
                    facts[backbone].setdefault(key, {}).update(value)
                else:
                    facts[backbone][key] = value
    for (backbone, backend), results in runs.items():
        completed = [result for result in results if "failed" not in result]
        failures += [{"backbone": backbone, "backend": backend, "error": result["failed"]}
                     for result in results if "failed" in result]
        for result in completed[:1]:
            failures += [{"backbone": backbone, "backend": backend, "size": size,
                          "error": error} for size, error in result["errors"].items()]
        seconds = {}
        for result in completed:
            for method in result["methods"]:
                seconds.setdefault((method["size"], method["input"]), []).append(
                    method["seconds"])
        for (size, kind), times in seconds.items():
            size_facts = facts[backbone].get(str(size), {})
            rows.append(make_row(backbone, backend, size, kind, times, completed,
                                 size_facts, facts[backbone].get("params")))
    return rows, failures, facts


def make_row(backbone, backend, size, kind, times, completed, size_facts, params):
    images = completed[0]["images"]
    rate = images / statistics.median(times)
    row = {
        "backbone": backbone,
        "backend": backend,
        "size": size,  # what --sizes asked for: pixels or "native"
        "image_size": size_facts.get("image_size", size),
        "native": size_facts.get("native"),  # None: native size not measured
        "input": kind,
        "images": images,
        "seconds": times,
        "images_per_second": rate,
        "gflops": size_facts.get("gflops"),
        "gflop_per_s": rate * size_facts["gflops"] if "gflops" in size_facts else None,
        "params": params,
        "params_m": params / 1e6 if params else None,
        "preprocessing": size_facts.get("preprocessing"),
        "layer": size_facts.get("layer"),
        "n_features": size_facts.get("n_features"),
        "rss_loaded_mb": max(result["rss_loaded_mb"] for result in completed),
        "transform_peak_mb": max(result["transform_peak_mb"] for result in completed),
        "weights": WEIGHTS_NOTE,
    }
    if all(row[key] == value for key, value in REFERENCE_SETTING.items()):
        row["reference"] = REFERENCE.get(backbone)
    return row


def lookup(rows, backbone, setting):
    for row in rows:
        if row["backbone"] == backbone and all(row[k] == v for k, v in setting.items()):
            return row["images_per_second"]
    return None


def check_targets(rows):
    """Issue 13's ratios to VGG16 (TensorFlow, 224 px, from paths), met or not."""
    vgg16 = lookup(rows, "VGG16", TARGET_SETTING)
    targets = []
    for backbone, target in TARGETS.items():
        rate = lookup(rows, backbone, TARGET_SETTING)
        ratio = rate / vgg16 if rate and vgg16 else None
        targets.append({"backbone": backbone, "versus": "VGG16", **TARGET_SETTING,
                        "images_per_second": rate, "vgg16_images_per_second": vgg16,
                        "ratio": ratio, "target": target,
                        "met": None if ratio is None else ratio >= target})
    return targets


def print_targets(targets):
    print("\nissue 13 targets (tensorflow, 224 px, from JPEG paths, images/s vs VGG16):")
    for target in targets:
        if target["ratio"] is None:
            print(f"  {target['backbone']:17s} n/a (needs VGG16 and it measured at "
                  "224 px on tensorflow from paths)")
            continue
        print(f"  {target['backbone']:17s} {target['ratio']:6.3g}x VGG16 "
              f"({target['images_per_second']:.3g} vs "
              f"{target['vgg16_images_per_second']:.3g} images/s; target >= "
              f"{target['target']:g}x: {'met' if target['met'] else 'not met'})")


# --- optional accuracy (VGG16 with real weights; others with their ImageNet weights) --


def accuracy_weights(backbone, args):
    """The weights file for VGG16 (``--weights``), ``"imagenet"`` for the others
    (Keras' cache or download, or SKLEARN_CONVFEAT_WEIGHTS); None when VGG16 has no
    file."""
    if backbone != "VGG16":
        return "imagenet"
    weights = _common.weights_argument(args.weights)
    return weights if weights is not None and Path(weights).is_file() else None


def measure_accuracy(args):
    """Test accuracy of LogisticRegression on each ``--accuracy-backbones`` network's
    avg-pooled stage-5 features; a backbone without weights is skipped, with why."""
    from sklearn.linear_model import LogisticRegression

    train, y_train = _common.load_split(args.data, "train", args.accuracy_images)
    test, y_test = _common.load_split(args.data, "test", args.accuracy_test_images)
    rows, skipped = [], []
    for backbone in args.accuracy_backbones:
        weights = accuracy_weights(backbone, args)
        if weights is None:
            skipped.append({"backbone": backbone,
                            "reason": f"no weights file: {args.weights}"})
            continue
        extractor = ConvFeatureExtractor(
            backbone=backbone, weights=weights, layer=LAYER, pooling=POOLING,
            image_size=args.accuracy_size,
        )
        try:
            features, extract_seconds = _common.timed(extractor.fit_transform, train)
        except Exception as exc:  # noqa: BLE001  e.g. no internet for "imagenet"
            skipped.append({"backbone": backbone,
                            "reason": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        test_features, test_seconds = _common.timed(extractor.transform, test)
        classifier = LogisticRegression(max_iter=5000).fit(features, y_train)
        rows.append({
            "backbone": backbone, "weights": weights,
            "weights_sha256": extractor.weights_sha256_,
            "image_size": extractor.image_size_[0], "layer": extractor.layer_,
            "pooling": POOLING, "preprocessing": extractor.preprocessing_,
            "train_images": len(train), "test_images": len(test),
            "test_accuracy": float(classifier.score(test_features, y_test)),
            "extract_seconds": extract_seconds + test_seconds,
        })
    print(f"\naccuracy: avg-pooled stage-5 features + LogisticRegression, "
          f"{len(train)} train / {len(test)} test images")
    if rows:
        _common.print_table(rows, ["backbone", "image_size", "layer", "preprocessing",
                                   "test_accuracy", "extract_seconds"])
    for skip in skipped:
        print(f"  {skip['backbone']} skipped: {skip['reason']}")
    return {"rows": rows, "skipped": skipped}


# --- command line ---------------------------------------------------------------------


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES,
                           help="keras.applications names, any case (default: 12)")
    arguments.add_argument("--sizes", nargs="+", default=["224,native"],
                           help="image sizes: pixels and/or 'native' (default "
                           "224,native)")
    arguments.add_argument("--backends", nargs="+", choices=list(BACKENDS),
                           help="default: every backend whose packages are installed")
    arguments.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    arguments.add_argument("--images", type=int, default=96,
                           help="train images per measurement (default 96)")
    arguments.add_argument("--repeats", type=int, default=2)
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--quick", action="store_true",
                           help="smoke run: VGG16 and MobileNetV3Large, 16 images, "
                           "1 round, tensorflow")
    arguments.add_argument("--accuracy", action="store_true",
                           help="also VGG16's test accuracy with the --weights file")
    arguments.add_argument("--accuracy-only", action="store_true",
                           help="--accuracy without the speed rounds")
    arguments.add_argument("--accuracy-backbones", nargs="+", default=["VGG16"],
                           help="networks whose accuracy --accuracy measures "
                           "(default VGG16; others need their ImageNet weights)")
    arguments.add_argument("--accuracy-images", type=int, default=2000,
                           help="train images the classifier learns from")
    arguments.add_argument("--accuracy-test-images", type=int,
                           help="test images scored (default: all)")
    arguments.add_argument("--accuracy-size", default="150",
                           help="image size of the accuracy runs: pixels or 'native'")
    arguments.add_argument("--child-timeout", type=int, default=CHILD_TIMEOUT_S)
    arguments.add_argument("--child", help=argparse.SUPPRESS)
    arguments.add_argument("--child-backend", help=argparse.SUPPRESS)
    arguments.add_argument("--facts", action="store_true", help=argparse.SUPPRESS)
    args = arguments.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
    except argparse.ArgumentTypeError as exc:
        arguments.error(str(exc))
    if args.child:
        print(json.dumps(measure_child(args)))
        return None
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    args.backbones = resolve_backbones(args.backbones)
    args.accuracy_backbones = resolve_backbones(args.accuracy_backbones)
    try:
        (args.accuracy_size,) = parse_sizes([args.accuracy_size])
    except (argparse.ArgumentTypeError, ValueError):
        arguments.error(f"--accuracy-size takes one size or 'native'. Got "
                        f"{args.accuracy_size!r} instead.")
    args.backends = args.backends or [
        name for name in bench_throughput.available_backends() if name in BACKENDS
    ]

    args.accuracy = args.accuracy or args.accuracy_only
    runs = {} if args.accuracy_only else measure(args)
    rows, failures, facts = summarize(runs)
    print(f"\n{rows[0]['images'] if rows else args.images} images of train/, "
          f"layer {LAYER} + {POOLING} pooling, batch {args.batch_size}, random "
          f"weights, median of {args.repeats} round(s), one process per backbone "
          "and backend")
    _common.print_table(rows, COLUMNS)
    for failure in failures:
        print(f"FAILED {failure['backbone']} on {failure['backend']}"
              f"{' at ' + str(failure['size']) if 'size' in failure else ''}: "
              f"{failure['error']}")
    targets = check_targets(rows)
    print_targets(targets)
    settings = {key: value for key, value in vars(args).items()
                if key not in ("out", "child", "child_backend", "facts")}
    settings["sizes"] = ["native" if size is None else size for size in args.sizes]
    results = {"settings": settings, "weights": WEIGHTS_NOTE, "rows": rows,
               "failures": failures, "facts": facts, "targets": targets,
               "reference": {"source": "issue 13: Keras predict_on_batch, batch 32, "
                             "arrays, 224 px, random weights, this CPU",
                             "images_per_second": REFERENCE}}
    if args.accuracy:
        results["accuracy"] = measure_accuracy(args)
    return _common.save_results("bench_backbones", results, args.out)


if __name__ == "__main__":
    main()
