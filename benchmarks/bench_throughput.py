"""Extraction throughput: ConvFeatureExtractor.transform against the book's predict
loop and against this CPU's physical limit.

Question
    How many images per second does ``ConvFeatureExtractor.transform`` extract, how
    does that compare with the seed's own loop (the book's ``extract_features``:
    ``model.predict`` on batches of 20), and what fraction of what this CPU's float32
    GEMM rate allows does each reach?

Setup
    ``--images`` (200) images of cats_and_dogs_small/train, at 150x150 and 224x224,
    VGG16 up to block5_pool (the whole base) with the same weights file in every method.
    Methods (a dict entry per extractor backend, so more backends slot in):
      extractor[tensorflow]  ``ConvFeatureExtractor(batch_size=B).transform``, B in 1,
                             20, 64, its default preprocessing ("vgg16");
      seed_loop              ``keras.applications.VGG16(include_top=False,
                             input_shape=(S, S, 3))``, a Python loop calling
                             ``model.predict`` on batches of 20 (fixed) into a
                             preallocated array, x/255 as the book's generator does.
    Each method reads both inputs:
      arrays  the images decoded and resized to SxS once beforehand (float32): only the
              forward pass and its per-batch overhead are timed;
      paths   the JPEG paths: the extractor decodes in its background thread (PIL +
              antialiased bilinear resize), the seed loop decodes each batch as the
              book's ImageDataGenerator does (``keras.utils.load_img`` with
              ``target_size``: PIL nearest) and then predicts it.
    One warm-up call per method (tracing), then ``--repeats`` (5) rounds that time every
    method once, in a fixed interleaved order (A, B, A, B, ...) so background load hits
    all alike; the median round is reported.
    Limit: the FLOPs of the base up to the cut layer per image (``count_flops``)
    divided by this machine's sustained float32 GEMM rate, measured in the same rounds
    with numpy (NxN matmuls for about ``--gemm-seconds``, numpy's own threads).
    Ratios: vs_seed_loop (same input, same size) and fraction_of_limit.

Published reference
    None: the book ran this on a GPU and reports no speed. Known here: about 9-11
    images/s at 150x150 on 2 cores. fraction_of_limit 1.0 would mean the convolutions
    run at the GEMM rate.
"""

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from sklearn_convfeat import ConvFeatureExtractor  # noqa: E402
from sklearn_convfeat._backbone import count_flops  # noqa: E402
from sklearn_convfeat._images import decode_image, resize  # noqa: E402

# ConvFeatureExtractor backends to time, name -> extra constructor parameters; an
# execution-backend parameter (backend="onnxruntime", ...) adds an entry here.
EXTRACTOR_BACKENDS = {"tensorflow": {}}
LAYER = "block5_pool"  # the book's whole base; the extractor's default
SEED_METHOD = "seed_loop"
SEED_BATCH_SIZE = 20  # the book's
INPUTS = ("arrays", "paths")
COLUMNS = ["method", "input", "batch_size", "images_per_second", "vs_seed_loop",
           "fraction_of_limit"]


@dataclass
class Method:
    name: str
    batch_size: int
    input: str
    run: Callable


def decode_all(paths, size):
    """The images at size x size, float32, decoded as the extractor decodes them."""
    return np.concatenate([
        resize(decode_image(path)[np.newaxis].astype(np.float32), (size, size))
        for path in paths
    ])


def book_batch(paths, size):
    """A batch decoded as the book's ImageDataGenerator(rescale=1/255) decodes it."""
    import keras

    return np.stack([
        keras.utils.img_to_array(keras.utils.load_img(path, target_size=(size, size)))
        for path in paths
    ]) / 255.0


def seed_loop(model, images, decode):
    """The book's extract_features: predict batches of 20 into a preallocated array."""
    features = np.zeros((len(images), *model.output_shape[1:]), dtype=np.float32)
    for start in range(0, len(images), SEED_BATCH_SIZE):
        batch = decode(images[start : start + SEED_BATCH_SIZE])
        features[start : start + len(batch)] = model.predict(batch, verbose=0)
    return features


def seed_methods(weights, size, inputs):
    import keras

    model = keras.applications.VGG16(
        weights=weights, include_top=False, input_shape=(size, size, 3)
    )
    decoders = {"arrays": lambda batch: batch / 255.0,
                "paths": lambda batch: book_batch(batch, size)}
    return [
        Method(SEED_METHOD, SEED_BATCH_SIZE, kind,
               lambda images, decode=decoders[kind]: seed_loop(model, images, decode))
        for kind in inputs
    ]


def extractor_methods(weights, size, batch_sizes, inputs, fit_paths):
    methods = []
    for backend, parameters in EXTRACTOR_BACKENDS.items():
        for batch_size in batch_sizes:
            extractor = ConvFeatureExtractor(
                weights=weights, layer=LAYER, image_size=size, batch_size=batch_size,
                random_state=0, **parameters,
            ).fit(fit_paths)
            methods += [Method(f"extractor[{backend}]", batch_size, kind,
                               extractor.transform) for kind in inputs]
    return methods


def gemm_gflops(n, seconds):
    """numpy's sustained float32 GEMM rate: n x n matmuls for about ``seconds``."""
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    product = a @ b  # warm-up: BLAS threads started, pages touched
    _, one = _common.timed(np.matmul, a, b, out=product)
    count = max(1, round(seconds / one))
    start = time.perf_counter()
    for _ in range(count):
        np.matmul(a, b, out=product)
    return count * 2 * n**3 / (time.perf_counter() - start) / 1e9


def measure_size(args, weights, size, paths):
    """Every method's seconds per round at ``size``, and the rounds' GEMM rates."""
    inputs = {"arrays": decode_all(paths, size), "paths": paths}
    methods = seed_methods(weights, size, args.inputs) + extractor_methods(
        weights, size, args.batch_sizes, args.inputs, paths[:1]
    )
    for method in methods:  # tracing and first-call allocations stay out of the rounds
        method.run(inputs[method.input][: max(method.batch_size, SEED_BATCH_SIZE)])
    seconds = [[] for _ in methods]
    gemm = []
    for _ in range(args.repeats):
        gemm.append(gemm_gflops(args.gemm_size, args.gemm_seconds))
        for method, times in zip(methods, seconds):
            times.append(_common.timed(method.run, inputs[method.input])[1])
    return methods, seconds, gemm


def summarize(size, methods, seconds, gemm, n_images):
    flops = count_flops(LAYER, (size, size))
    gemm_rate = statistics.median(gemm)
    limit = {
        "image_size": size,
        "gflops_per_image": flops / 1e9,
        "gemm_gflops": gemm_rate,
        "gemm_gflops_rounds": gemm,
        "images_per_second": gemm_rate * 1e9 / flops,
    }
    rows = [
        {
            "image_size": size,
            "method": method.name,
            "input": method.input,
            "batch_size": method.batch_size,
            "images_per_second": n_images / statistics.median(times),
            "seconds": times,
        }
        for method, times in zip(methods, seconds)
    ]
    seed_rates = {row["input"]: row["images_per_second"]
                  for row in rows if row["method"] == SEED_METHOD}
    for row in rows:
        row["vs_seed_loop"] = row["images_per_second"] / seed_rates[row["input"]]
        row["fraction_of_limit"] = row["images_per_second"] / limit["images_per_second"]
    return rows, limit


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--images", type=int, default=200,
                           help="images of train/ to time (default 200)")
    arguments.add_argument("--sizes", type=int, nargs="+", default=[150, 224])
    arguments.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 20, 64],
                           help="the extractor's batch_size values")
    arguments.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    arguments.add_argument("--repeats", type=int, default=5)
    arguments.add_argument("--gemm-size", type=int, default=2048)
    arguments.add_argument("--gemm-seconds", type=float, default=1.0)
    args = arguments.parse_args(argv)
    weights = _common.weights_argument(args.weights)

    paths, _ = _common.load_split(args.data, "train", args.images)
    results = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
               "images": len(paths), "rows": [], "limits": []}
    for size in args.sizes:
        methods, seconds, gemm = measure_size(args, weights, size, paths)
        rows, limit = summarize(size, methods, seconds, gemm, len(paths))
        results["rows"] += rows
        results["limits"].append(limit)
        print(f"\n{len(paths)} images at {size}x{size}, "
              f"median of {args.repeats} rounds")
        _common.print_table(rows, COLUMNS)
        print(f"limit: {limit['images_per_second']:.4g} images/s = "
              f"{limit['gemm_gflops']:.4g} GFLOP/s (numpy float32 GEMM) / "
              f"{limit['gflops_per_image']:.4g} GFLOP per image")
    path = _common.write_results("bench_throughput", results, args.out)
    print(f"\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
