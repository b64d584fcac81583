"""Resident memory over repeated fits: does each training fit leave memory behind?

Question
    A GridSearchCV fits many clones in one process. Does the process's resident memory
    (RSS) stay bounded from fit to fit, or does every fit leave its network behind
    (issue 14: FineTuner +60 MB per fit with the cache, +100 MB without; a 30-fit
    search added 2-3 GB)?

Setup
    Each estimator runs in a fresh process (this script with the hidden ``--child
    NAME``), which fits it ``--fits`` times (10) in a row on the same small random
    data and records the RSS after each fit, after ``gc.collect()`` and, on glibc,
    ``malloc_trim(0)`` (so that freed memory the allocator still holds is not counted
    as a leak). Estimators:
      finetuner_cache   FineTuner(cache="memory"): 24 random 32x32 images, 2 head
                        epochs, 1 fine-tune epoch, batch 8;
      finetuner_e2e     the same with cache=None (end-to-end training);
      mlp               KerasMLPClassifier: 200 x 512 random features, 5 epochs.
    FineTuner uses random weights (``weights=None``): memory does not depend on the
    weight values, only on the network (VGG16's 14.7 M parameters, 59 MB of float32),
    so the result holds for the ImageNet weights. Columns:
      rss_first_mb     RSS after the first fit;
      rss_last_mb      RSS after the last fit;
      mb_per_fit       (RSS after the last fit - RSS after the 2nd) / (fits - 2): the
                       steady growth, once the one-off tracing and caches are done.

Published reference / target
    Issue 14, item 9: at most 10 MB per fit after the second. Before the fix (commit
    a30f680) this script measured 60.0 MB per fit (cache), 91.5 MB (cache=None) and
    2.6 MB (mlp): every fit's network and optimizer slots stayed alive through the
    gradient function that ``tf.custom_gradient`` registers, and never unregisters,
    when Keras' optimizer sums gradients across replicas in a traced train step.
    After it: 1.1, 1.0 and 0.3 MB per fit (2-core shared machine).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import sklearn_convfeat  # noqa: E402

TARGET_MB_PER_FIT = 10.0
ESTIMATORS = ("finetuner_cache", "finetuner_e2e", "mlp")


def rss_mb():
    """Resident memory of this process in MB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def release_freed_memory():
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def make_estimator(name):
    from sklearn_convfeat import FineTuner, KerasMLPClassifier

    if name == "mlp":
        return KerasMLPClassifier(epochs=5, batch_size=20, random_state=0)
    return FineTuner(
        weights=None, image_size=32, head_epochs=2, fine_tune_epochs=1, batch_size=8,
        cache="memory" if name == "finetuner_cache" else None, random_state=0,
    )


def make_data(name):
    rng = np.random.default_rng(0)
    if name == "mlp":
        X = rng.standard_normal((200, 512)).astype(np.float32)
        return X, np.arange(200) % 2
    X = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    return X, np.array(["cat", "dog"] * 12)


def child(name, fits):
    """Fit ``name`` ``fits`` times in this process; print the RSS after each as JSON."""
    X, y = make_data(name)
    rss = []
    for _ in range(fits):
        make_estimator(name).fit(X, y)
        release_freed_memory()
        rss.append(rss_mb())
    print(json.dumps(rss))


def run_child(name, fits):
    # The child imports the same sklearn_convfeat as this process, installed or not.
    package_root = str(Path(sklearn_convfeat.__file__).resolve().parents[1])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, "--fits", str(fits)],
        capture_output=True, text=True, env=env, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth_per_fit(rss):
    """MB per fit from the 2nd fit to the last."""
    return (rss[-1] - rss[1]) / (len(rss) - 2)


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--fits", type=int, default=10, help="fits per estimator (>= 3)")
    arguments.add_argument("--estimators", nargs="+", choices=ESTIMATORS,
                           default=list(ESTIMATORS))
    arguments.add_argument("--child", choices=ESTIMATORS, help=argparse.SUPPRESS)
    args = arguments.parse_args(argv)
    if args.fits < 3:
        arguments.error("--fits must be at least 3: growth is measured after the 2nd")
    if args.child:
        child(args.child, args.fits)
        return None

    rows = []
    for name in args.estimators:
        rss = run_child(name, args.fits)
        rows.append({
            "estimator": name,
            "fits": len(rss),
            "rss_first_mb": round(rss[0], 1),
            "rss_last_mb": round(rss[-1], 1),
            "mb_per_fit": round(growth_per_fit(rss), 2),
            "meets_target": growth_per_fit(rss) <= TARGET_MB_PER_FIT,
            "rss_mb": [round(value, 1) for value in rss],
        })
    _common.print_table(
        rows, ["estimator", "fits", "rss_first_mb", "rss_last_mb", "mb_per_fit",
               "meets_target"],
    )
    print(f"target: <= {TARGET_MB_PER_FIT} MB per fit after the 2nd")
    return _common.save_results(
        "bench_refit", {"target_mb_per_fit": TARGET_MB_PER_FIT, "rows": rows}, args.out
    )


if __name__ == "__main__":
    main()
