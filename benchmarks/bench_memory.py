"""Memory against N and against photo resolution: the peak resident memory of
ConvFeatureExtractor.transform over 500 to 4000 image paths, and over 32 photos of
0.3 MP or of 12 MP.

Question
    Does transform's memory stay flat in the number of images (it decodes and runs one
    batch at a time), apart from the (N, n_features) float32 result it returns? And
    does it stay bounded by batch_size x image_size whatever the photos' resolution
    (each image is decoded and resized on its own; a JPEG is decoded at 1/2, 1/4 or
    1/8 scale, still above the target, when it is 2x larger or more)?

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

Resolution part (``--parts resolution``, or ``--parts n resolution`` for both;
results in bench_memory_resolution.json)
    32 synthetic JPEGs (smooth colour gradients plus noise, quality 90) of 640x480
    (0.3 MP) and of 4000x3000 (12 MP), generated into a temporary folder; the same
    extractor settings and one fresh process per resolution, with the same columns.
    Target: the 12 MP peak within 2x of the 0.3 MP one.

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
TARGET_RESOLUTION_RATIO = 2.0  # issue 14: peak RSS, 12 MP photos / 0.3 MP photos
RESOLUTIONS = {"0.3 MP": (640, 480), "12 MP": (4000, 3000)}  # (width, height)
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


def synthetic_photos(folder, n, width, height):
    """``n`` JPEGs of ``width`` x ``height``: smooth gradients with noise, like photos."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    for i in range(n):
        red, green, blue = rng.uniform(0, 255, size=3)
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[..., 0] = red * rows + (255 - red) * cols
        pixels[..., 1] = green * (1 - rows) * cols + 64
        pixels[..., 2] = blue * (1 - cols)
        noise = rng.integers(-12, 13, size=(height, width, 1), dtype=np.int16)
        pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        paths.append(str(Path(folder) / f"photo_{i}.jpg"))
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return np.asarray(paths, dtype=object)


def measure(args, n, paths=None):
    """In a fresh process: transform's memory over ``n`` paths."""
    if paths is None:
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


def run_child(args, n, photos=None):
    """``measure(args, n)`` in a fresh Python process running this script; with
    ``photos`` (a folder), over the JPEGs in it instead of the data set."""
    command = [
        sys.executable, __file__, "--child", str(n), "--data", str(args.data),
        "--weights", args.weights, "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size),
    ]
    if photos is not None:
        command += ["--photos", str(photos)]
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
    arguments.add_argument("--parts", nargs="+", choices=["n", "resolution"],
                           default=["n"],
                           help="memory against N (default), against photo "
                           "resolution, or both: --parts n resolution")
    arguments.add_argument("--photos-per-resolution", type=int, default=32)
    arguments.add_argument("--resolutions", nargs="+", default=list(RESOLUTIONS),
                           choices=list(RESOLUTIONS))
    arguments.add_argument("--child", type=int, help=argparse.SUPPRESS)
    arguments.add_argument("--photos", help=argparse.SUPPRESS)
    args = arguments.parse_args(argv)
    if args.child is not None:
        photos = None
        if args.photos:
            photos = np.asarray(sorted(str(p) for p in Path(args.photos).glob("*.jpg")))
        print(json.dumps(measure(args, args.child, photos)))
        return None
    resolution = None
    if "resolution" in args.parts:
        resolution = memory_against_resolution(args)
    if "n" not in args.parts:
        return resolution
    results = memory_against_n(args)
    if resolution is not None:
        results["resolution"] = resolution
    return results


def memory_against_resolution(args):
    import tempfile

    rows = []
    for name in args.resolutions:
        width, height = RESOLUTIONS[name]
        with tempfile.TemporaryDirectory(prefix="bench_memory_") as folder:
            synthetic_photos(folder, args.photos_per_resolution, width, height)
            row = run_child(args, args.photos_per_resolution, photos=folder)
        rows.append({"resolution": name, "width": width, "height": height, **row})
    results = {
        "settings": {k: v for k, v in vars(args).items()
                     if k not in ("out", "child", "photos", "sizes")},
        "rows": rows,
        "target_peak_ratio": TARGET_RESOLUTION_RATIO,
    }
    print(f"\nMemory of transform over {args.photos_per_resolution} JPEGs at "
          f"{args.image_size}x{args.image_size}, batch {args.batch_size}, one fresh "
          "process per resolution")
    _common.print_table(rows, ["resolution", *COLUMNS])
    if len(rows) > 1:
        ratio = rows[-1]["transform_peak_mb"] / rows[0]["transform_peak_mb"]
        results["peak_ratio"] = ratio
        met = "met" if ratio <= TARGET_RESOLUTION_RATIO else "NOT met"
        print(f"peak RSS, {rows[-1]['resolution']} / {rows[0]['resolution']}: "
              f"{ratio:.3g}x; target <= {TARGET_RESOLUTION_RATIO}x: {met}")
    out = None
    if args.out:
        out = Path(args.out).with_name(Path(args.out).stem + "_resolution.json")
    path = _common.write_results("bench_memory_resolution", results, out)
    print(f"\nresults: {path}")
    return results


def memory_against_n(args):
    rows = [run_child(args, n) for n in args.sizes]
    results = {
        "settings": {k: v for k, v in vars(args).items()
                     if k in ("data", "weights", "sizes", "image_size", "batch_size")},
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
