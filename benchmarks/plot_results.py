"""Plot the throughput and memory benchmarks' results as PNG files for the docs.

Reads ``bench_throughput.json`` and ``bench_memory.json`` from ``--results`` (default
``benchmarks/results/``; a missing one is skipped) and writes into ``--out-dir``
(default ``docs/``):
  throughput.png  images/s against batch size, one line per method and input, the
                  physical limit dashed, one panel per image size;
  memory.png      resident memory of transform against the number of images N.
Needs matplotlib (imported only here).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on benchmark machines
    import matplotlib.pyplot as plt

    return plt


def machine_title(results):
    machine = results["machine"]
    return f"{machine['cpu']}, {machine['cores']} cores, {results['date'][:10]}"


def plot_throughput(results, path):
    plt = pyplot()
    limits = results["limits"]
    figure, axes = plt.subplots(1, len(limits), figsize=(5.5 * len(limits), 4.5),
                                squeeze=False)
    for axis, limit in zip(axes[0], limits):
        lines = {}
        for row in results["rows"]:
            if row["image_size"] == limit["image_size"]:
                lines.setdefault((row["method"], row["input"]), []).append(
                    (row["batch_size"], row["images_per_second"])
                )
        for (method, kind), points in lines.items():
            batch_sizes, rates = zip(*sorted(points))
            axis.plot(batch_sizes, rates, marker="o", label=f"{method}, from {kind}")
        axis.axhline(limit["images_per_second"], color="black", linestyle="--",
                     label="limit: FLOPs / GEMM rate")
        size = limit["image_size"]
        axis.set(title=f"{size}x{size}", xlabel="batch size", ylabel="images/s",
                 xscale="log")
        batch_sizes = sorted({batch for points in lines.values()
                              for batch, _ in points})
        axis.set_xticks(batch_sizes, [str(batch) for batch in batch_sizes])
        axis.minorticks_off()
        axis.set_ylim(bottom=0)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"Extraction throughput ({machine_title(results)})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_memory(results, path):
    plt = pyplot()
    rows = sorted(results["rows"], key=lambda row: row["n_images"])
    n_images = [row["n_images"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for column, label in [
        ("transform_peak_mb", "peak during transform"),
        ("rss_before_mb", "before transform (model loaded)"),
        ("working_mb", "transform's working memory"),
        ("output_mb", "returned features"),
    ]:
        axis.plot(n_images, [row[column] for row in rows], marker="o", label=label)
    axis.set(xlabel="images N", ylabel="resident memory (MB)",
             title=f"Memory of transform ({machine_title(results)})")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


PLOTS = {  # results file -> (plotter, PNG name)
    "bench_throughput.json": (plot_throughput, "throughput.png"),
    "bench_memory.json": (plot_memory, "memory.png"),
}


def main(argv=None):
    arguments = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    arguments.add_argument("--results", default=str(_common.RESULTS),
                           help="folder of the results files (default: results/)")
    arguments.add_argument("--out-dir", default=str(_common.REPO / "docs"),
                           help="folder the PNG files go to (default: docs)")
    args = arguments.parse_args(argv)

    written = []
    for name, (plot, png) in PLOTS.items():
        source = Path(args.results) / name
        if not source.is_file():
            print(f"skipped {png}: no {source}")
            continue
        path = Path(args.out_dir) / png
        path.parent.mkdir(parents=True, exist_ok=True)
        plot(json.loads(source.read_text()), path)
        print(f"wrote {path}")
        written.append(path)
    if not written:
        arguments.error(f"no results to plot in {args.results}")
    return written


if __name__ == "__main__":
    main()
