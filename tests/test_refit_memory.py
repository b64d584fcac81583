"""Repeated fits in one process keep resident memory bounded (issue 14, item 9).

Every traced Keras train step used to leave the whole network behind: the optimizer's
cross-replica gradient sum goes through ``tf.custom_gradient``, whose gradient
function stays in TensorFlow's global registry and holds the traced graph with its
captured variables.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sklearn_convfeat import KerasMLPClassifier

REPO = Path(__file__).resolve().parents[1]

_REFITS = textwrap.dedent("""
    import ctypes, gc, json, os
    import numpy as np
    from sklearn_convfeat import FineTuner

    def rss_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 8)
    rss = []
    for _ in range(6):
        FineTuner(weights=None, image_size=32, head_epochs=1, fine_tune_epochs=1,
                  batch_size=8, cache="memory", random_state=0).fit(X, y)
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        rss.append(rss_mb())
    print(json.dumps(rss))
""")


def _gradient_functions():
    from tensorflow.python.framework import ops

    return set(ops._gradient_registry._registry)


def test_fit_leaves_no_gradient_functions_registered():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4)).astype(np.float32)
    y = np.arange(20) % 2
    before = _gradient_functions()
    KerasMLPClassifier(epochs=2, batch_size=5, random_state=0).fit(X, y)
    left = {name for name in _gradient_functions() - before
            if name.startswith("CustomGradient-")}
    assert left == set()


@pytest.mark.slow
def test_repeated_finetuner_fits_keep_memory_bounded():
    if not Path("/proc/self/statm").exists():
        pytest.skip("reads resident memory from /proc (Linux)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _REFITS], capture_output=True,
                          text=True, env=env, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    per_fit = (rss[-1] - rss[1]) / (len(rss) - 2)
    # Before the fix: ~60 MB per fit (VGG16's weights and optimizer slots); a generous
    # bound, as allocator noise on a shared machine is a few MB.
    assert per_fit < 15, f"RSS grows {per_fit:.1f} MB per fit: {rss}"
