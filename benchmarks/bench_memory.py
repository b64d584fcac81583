"""Memory against N: the peak resident memory of ConvFeatureExtractor.transform over
500 to 4000 image paths.

Question
    Does transform's memory stay flat in the number of images (it decodes and runs one
    batch at a time), apart from the (N, n_features) float32 result it returns?

Setup
    Paths from all three splits of cats_and_dogs_small (4000 images, repeated when N
    is larger), 150x150, the shared ImageNet VGG16 weights, ConvFeatureExtractor
    defaults (block5_pool, flatten: 8192 features, batch 32). Each N runs in a fresh
    process (this script with the hidden ``--child N``), which builds the model (fit)
    and traces the forward on one batch, then records:
      rss_before_mb      resident memory before transform (model and runtime loaded);
      transform_peak_mb  peak resident memory during transform (Linux: VmHWM, reset
                         through /proc/self/clear_refs just before; elsewhere
                         ru_maxrss, which then also covers the build);
      increment_mb       transform_peak_mb - rss_before_mb: transform's own memory;
      output_mb          the returned features, N * n_features * 4 bytes: must grow;
      working_mb         increment_mb - output_mb: should stay flat;
      ru_maxrss_mb       getrusage(RUSAGE_SELF).ru_maxrss after transform, the whole
                         process's peak. On Linux a child started from a large parent
                         (e.g. pytest with TensorFlow loaded) reports the parent's peak
                         here when that is larger (exec after vfork keeps it), which
                         is why the other columns come from /proc/self/status.

Published reference
    None: the book's extract_features preallocates its (N, 4, 4, 512) result and
    streams batches of 20 from a generator, so it is flat too, but reports no memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import sklearn_convfeat  # noqa: E402
from sklearn_convfeat import ConvFeatureExtractor  # noqa: E402

TARGET_PEAK_RATIO = 1.2  # issue 6: peak RSS from 500 to 4000 paths
COLUMNS = ["n_images", "rss_before_mb", "transform_peak_mb", "increment_mb",
           "output_mb", "working_mb", "ru_maxrss_mb", "images_per_second"]


def image_paths(data, n):
    """``n`` paths from all splits, cycled when ``n`` exceeds the images there."""
    paths = np.concatenate(
        [_common.load_split(data, split)[0] for split in _common.SPLITS]
    )
    return np.resize(paths, n)


def status_mb(field):
    """A memory field of /proc/self/status (Linux) in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ru_maxrss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def reset_peak_rss():
    """Reset this process's peak RSS (VmHWM); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_mb("VmHWM") is not None


def measure(args, n):
    """In a fresh process: transform's memory over ``n`` paths."""
    paths = image_paths(args.data, n)
    extractor = ConvFeatureExtractor(
        weights=_common.weights_argument(args.weights), image_size=args.image_size,
        batch_size=args.batch_size, random_state=0,
    ).fit(paths)
    extractor.transform(paths[: args.batch_size])  # tracing: the first call's one-off
    rss_before = status_mb("VmRSS") or ru_maxrss_mb()
    peak_reset = reset_peak_rss()
    features, seconds = _common.timed(extractor.transform, paths)
    transform_peak = status_mb("VmHWM") if peak_reset else ru_maxrss_mb()
    output = features.nbytes / 2**20
    return {
        "n_images": n,
        "rss_before_mb": rss_before,
        "transform_peak_mb": transform_peak,
        "increment_mb": transform_peak - rss_before,
        "output_mb": output,
        "working_mb": transform_peak - rss_before - output,
        "ru_maxrss_mb": ru_maxrss_mb(),
        "peak_reset": peak_reset,
        "seconds": seconds,
        "images_per_second": n / seconds,
    }


def run_child(args, n):
    """``measure(args, n)`` in a fresh Python process running this script."""
    command = [
        sys.executable, __file__, "--child", str(n), "--data", str(args.data),
        "--weights", args.weights, "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size),
    ]
    # The child imports the same sklearn_convfeat as this process, installed or not.
    package_root = str(Path(sklearn_convfeat.__file__).resolve().parents[1])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"child for N={n} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--sizes", type=int, nargs="+",
                           default=[500, 1000, 2000, 4000],
                           help="numbers of image paths N")
    arguments.add_argument("--image-size", type=int, default=150)
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = arguments.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args, args.child)))
        return None

    rows = [run_child(args, n) for n in args.sizes]
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "child")},
        "rows": rows,
        "working_growth_mb": rows[-1]["working_mb"] - rows[0]["working_mb"],
        "peak_ratio": rows[-1]["transform_peak_mb"] / rows[0]["transform_peak_mb"],
        "target_peak_ratio": TARGET_PEAK_RATIO,
    }
    print(f"\nMemory of transform at {args.image_size}x{args.image_size}, "
          f"batch {args.batch_size}, one fresh process per N")
    _common.print_table(rows, COLUMNS)
    print(f"working memory from N={rows[0]['n_images']} to N={rows[-1]['n_images']}: "
          f"{results['working_growth_mb']:+.4g} MB")
    met = "met" if results["peak_ratio"] <= TARGET_PEAK_RATIO else "NOT met"
    print(f"peak RSS, N={rows[-1]['n_images']} / N={rows[0]['n_images']}: "
          f"{results['peak_ratio']:.3g}x (output included); target <= "
          f"{TARGET_PEAK_RATIO}x: {met}")
    path = _common.write_results("bench_memory", results, args.out)
    print(f"\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
