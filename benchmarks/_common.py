"""Shared plumbing of the benchmark scripts: arguments, machine facts, results files."""

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cats_and_dogs_small"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg16_imagenet_notop.weights.h5"
SPLITS = ("train", "validation", "test")


def parser(description):
    """An ArgumentParser with the --data, --weights and --out every script takes."""
    arguments = argparse.ArgumentParser(
        description=description.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arguments.add_argument(
        "--data",
        default=os.environ.get("CONVFEAT_BENCH_DATA", str(DEFAULT_DATA)),
        help="cats_and_dogs_small folder (env CONVFEAT_BENCH_DATA)",
    )
    arguments.add_argument(
        "--weights",
        default=os.environ.get("CONVFEAT_BENCH_WEIGHTS", str(DEFAULT_WEIGHTS)),
        help="VGG16 notop weights file, or 'random' for a smoke run "
        "(env CONVFEAT_BENCH_WEIGHTS)",
    )
    arguments.add_argument("--out", help="results file (default: results/<script>.json)")
    return arguments


def weights_argument(value):
    return None if value == "random" else value


def load_split(data, split, limit=None):
    """Paths and string labels of ``data/split``; ``limit`` keeps every k-th image."""
    import numpy as np

    from sklearn_convfeat import load_image_folder

    paths, y, class_names = load_image_folder(Path(data) / split)
    labels = np.asarray(class_names, dtype=object)[y]
    if limit:  # a stratified-enough subset: files are sorted by class
        step = max(1, len(paths) // limit)
        paths, labels = paths[::step][:limit], labels[::step][:limit]
    return paths, labels


def timed(function, *args, **kwargs):
    """``function(*args, **kwargs)`` and its wall time in seconds."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def machine():
    """CPU model, cores and library versions of this run."""
    import keras
    import numpy
    import sklearn
    import tensorflow

    cpu, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
            if cpu and flags:
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        # What decides the dense-math rate: AVX2 only, or AVX-512 with VNNI/BF16/AMX.
        "cpu_flags": sorted(
            flag for flag in flags
            if flag.startswith(("avx", "amx", "fma")) or "vnni" in flag or "bf16" in flag
        ),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
    }


def git_commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_results(name, results, out=None):
    """Write ``results`` with date, commit and machine as JSON; return the path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        **results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def save_results(name, results, out=None):
    """Every script's last step: write ``results``, say where, and return them."""
    path = write_results(name, results, out)
    print(f"\nresults: {path}")
    return results


def print_table(rows, columns):
    """Print dict rows as an aligned text table."""
    widths = {c: max(len(c), *(len(_fmt(row.get(c))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
