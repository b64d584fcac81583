"""The README's main job with the default backend and with TensorFlow: is "auto" slower?

Question
    ``backend="auto"`` is the default: it may export the base to ONNX Runtime or
    OpenVINO when the job pays for the export. Issue 25 asks that the README's main job,
    ``convfeat evaluate cats_and_dogs_small --weights ...``, be no slower end to end
    with the default than with ``backend="tensorflow"``.

Setup
    The command line itself, in a fresh process each time (imports, weights, decoding,
    extraction of train/validation/test, LogisticRegression), with ``--backend auto``
    (the default) and ``--backend tensorflow``, ``--repeats`` (1) interleaved rounds,
    each with a fresh ``KERAS_HOME`` (so an export, were one made, would be timed).
    Wall seconds of the whole process, the backend it reports, and its accuracy table.
    ``--extra='...'`` passes more options to both (``--backbone``, ``--image-size``).

Published reference
    None: the two are compared with each other, in the same run.
"""

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

BACKENDS = ("auto", "tensorflow")
COLUMNS = ["backend", "backend_", "seconds", "train", "validation", "test"]


def run_job(args, backend):
    """One ``convfeat evaluate`` process: its wall seconds, backend and accuracies."""
    command = [sys.executable, "-m", "sklearn_convfeat.cli", "evaluate", str(args.data),
               "--weights", str(args.weights), "--backend", backend,
               *shlex.split(args.extra)]
    with tempfile.TemporaryDirectory(prefix="bench_main_job_") as home:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              env={**os.environ, "KERAS_HOME": home})
        seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    row = {"backend": backend, "seconds": seconds}
    for line in done.stdout.splitlines():
        words = line.split()
        if line.startswith("backend: "):
            row["backend_"] = words[1]
        elif words and words[0] in ("train", "validation", "test") and len(words) > 2:
            row[words[0]] = float(words[2])
    return row


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--repeats", type=int, default=1)
    arguments.add_argument("--extra", default="",
                           help="more convfeat evaluate options, for both runs, as one "
                           "string: --extra='--backbone resnet50 --image-size 224'")
    args = arguments.parse_args(argv)
    rows = [run_job(args, backend) for _ in range(args.repeats) for backend in BACKENDS]
    _common.print_table(rows, COLUMNS)
    median = {backend: sorted(row["seconds"] for row in rows
                              if row["backend"] == backend)[(args.repeats - 1) // 2]
              for backend in BACKENDS}
    ratio = median["auto"] / median["tensorflow"]
    print(f"\nauto / tensorflow wall time: {ratio:.3f} (target <= 1, within noise)")
    results = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
               "rows": rows, "median_seconds": median, "auto_over_tensorflow": ratio}
    return _common.save_results("bench_main_job", results, args.out)


if __name__ == "__main__":
    main()
