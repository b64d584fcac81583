"""Plot the throughput, memory and backbone benchmarks' results as PNG files for the
docs.

Reads ``bench_throughput.json``, ``bench_memory.json`` and ``bench_backbones.json``
from ``--results`` (default ``benchmarks/results/``; a missing one is skipped) and
writes into ``--out-dir`` (default ``docs/``):
  throughput.png  images/s against batch size, one line per method and input, the
                  physical limit dashed, one panel per image size;
  memory.png      resident memory of transform against the number of images N;
  backbones.png   images/s against GFLOPs per image (both log scales), one point per
                  backbone and backend, at 224 px from JPEG paths, with dotted lines
                  of constant GFLOP/s.
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


def plot_backbones(results, path, image_size=224, source="paths"):
    """images/s against GFLOPs per image: one marker per backend, one point per
    backbone, at ``image_size`` (else the size measured most) from ``source``."""
    import collections
    import math

    plt = pyplot()
    sizes = collections.Counter(row["image_size"] for row in results["rows"])
    if image_size not in sizes and sizes:
        image_size = sizes.most_common(1)[0][0]
    rows = [row for row in results["rows"]
            if row["image_size"] == image_size and row["input"] == source
            and row.get("gflops") and row.get("images_per_second")]
    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    markers = dict(zip(["tensorflow", "onnxruntime", "openvino", "openvino-int8"],
                       "osD^"))
    for backend in dict.fromkeys(row["backend"] for row in rows):
        points = [row for row in rows if row["backend"] == backend]
        axis.scatter([row["gflops"] for row in points],
                     [row["images_per_second"] for row in points],
                     marker=markers.get(backend, "v"), label=backend, alpha=0.8)
    labels = []
    for backbone in dict.fromkeys(row["backbone"] for row in rows):
        # Named once, beside its fastest point.
        best = max((row for row in rows if row["backbone"] == backbone),
                   key=lambda row: row["images_per_second"])
        labels.append(axis.annotate(
            backbone, (best["gflops"], best["images_per_second"]), xytext=(4, 3),
            textcoords="offset points", fontsize="x-small", va="bottom",
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5,
                        "shrinkA": 0, "shrinkB": 4}))
    axis.set(xscale="log", yscale="log", xlabel="GFLOPs per image (2 x multiply-adds)",
             ylabel=f"images/s, {image_size} px, from JPEG {source}",
             title=f"Backbones, random weights ({machine_title(results)})")
    if rows:
        # Constant arithmetic rates: a point on the line "100 GFLOP/s" computes at
        # that rate, one above it faster: how well the backend feeds the CPU.
        low, high = axis.get_xlim()
        bottom, top = axis.get_ylim()
        rates = [row["gflops"] * row["images_per_second"] for row in rows]
        for exponent in range(math.floor(math.log10(min(rates))),
                              math.ceil(math.log10(max(rates))) + 1):
            rate = 10.0**exponent
            axis.plot([low, high], [rate / low, rate / high], color="grey",
                      linestyle=":", linewidth=0.8)
            x = min(high, rate / bottom) / 1.3
            if low < x and bottom < rate / x < top:
                axis.annotate(f"{rate:g} GFLOP/s", (x, rate / x), fontsize="xx-small",
                              color="grey", ha="right")
        axis.set(xlim=(low, high), ylim=(bottom, top))
    axis.legend(fontsize="small", title="backend")
    figure.tight_layout()
    separate_labels(figure, labels)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def separate_labels(figure, labels):
    """Move labels up, a line at a time, until none overlaps one placed before it
    (backbones of near-equal FLOPs and speed would print over each other)."""
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    placed = []
    for label in sorted(labels, key=lambda label: label.xy[1]):
        x_offset, y_offset = label.get_position()
        for _ in range(len(labels)):
            label.update_positions(renderer)  # where the offset puts the text now
            box = Text.get_window_extent(label, renderer)  # the text, not its line
            if not any(box.overlaps(other) for other in placed):
                break
            y_offset += box.height * 72 / figure.dpi + 1
            label.set_position((x_offset, y_offset))
        label.update_positions(renderer)
        placed.append(Text.get_window_extent(label, renderer))


PLOTS = {  # results file -> (plotter, PNG name)
    "bench_throughput.json": (plot_throughput, "throughput.png"),
    "bench_memory.json": (plot_memory, "memory.png"),
    "bench_backbones.json": (plot_backbones, "backbones.png"),
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
        results = json.loads(source.read_text())
        # bench_backbones' exported backends may come from a run of their own.
        extra = source.with_name(source.stem + "_exported.json")
        if name == "bench_backbones.json" and extra.is_file():
            results["rows"] = results["rows"] + json.loads(extra.read_text())["rows"]
        plot(results, path)
        print(f"wrote {path}")
        written.append(path)
    if not written:
        arguments.error(f"no results to plot in {args.results}")
    return written


if __name__ == "__main__":
    main()
