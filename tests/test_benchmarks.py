"""Smoke tests: every benchmark script runs end to end on tiny offline inputs."""

import json
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder

# Each script runs end to end: minutes for the file, so the slow tier.
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def dataset(tmp_path):
    for split in ("train", "validation", "test"):
        make_image_folder(tmp_path / "data" / split, {"cats": 4, "dogs": 4})
    return tmp_path / "data"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        import importlib

        return importlib.import_module(name)

    yield load
    for name in [n for n in sys.modules if n.startswith("bench_") or n == "_common"]:
        del sys.modules[name]


def test_bench_finetune(bench, dataset, tmp_path):
    out = tmp_path / "finetune.json"
    bench("bench_finetune").main([
        "--data", str(dataset), "--weights", "random", "--image-sizes", "32",
        "--head-epochs", "1", "--fine-tune-epochs", "1", "--fidelity-images", "4",
        "--second-images", "3", "--second-size", "32", "--timing", "--timing-image-size", "32", "--timing-images", "8",
        "--out", str(out),
    ])
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1 and results["date"]
    rows = {(row["model"], row["tta"]): row for row in results["rows"]}
    assert set(rows) == {(model, tta) for model in ("FineTuner", "LogisticRegression")
                         for tta in ("none", "flip")}
    for (_, tta), row in rows.items():
        assert 0 <= row["test_accuracy"] <= 1 and row["predict_seconds_per_image"] > 0
        assert (row["validation_accuracy"] is None) == (tta == "flip")
    assert rows["FineTuner", "none"]["history"]["learning_rate"]
    assert {verdict["target"] for verdict in results["verdicts"]} >= {
        "FineTuner fit <= 30 min at 32 px",
        "FineTuner >= LogisticRegression + 0.01 (same run)"}
    fidelity = results["shift_fidelity"]
    assert fidelity["images"] == 4 and len(fidelity["rows"]) == 4
    for row in fidelity["rows"]:
        assert row["relative_error"] >= 0 and row["unshifted_relative_error"] > 0
    second = {row["model"]: row for row in results["second_dataset"]}
    assert set(second) == {"FineTuner (defaults)", "FineTuner (book's recipe)",
                           "LogisticRegression"}
    assert all(row["train_images"] == 9 for row in second.values())
    timing = results["timing"]["rows"]
    assert [row["epoch"] for row in timing] == ["train only", "train + validation"]
    assert [row["validation_images"] for row in timing] == [0, 4]
    for row in timing:
        assert row["phase2_speedup"] > 0
        assert 1 < row["flop_bound"] < 20

    # a run at another size keeps the rows, verdicts and sections it did not re-measure
    bench("bench_finetune").main([
        "--data", str(dataset), "--weights", "random", "--image-sizes", "40",
        "--logreg-sizes", "--head-epochs", "1", "--fine-tune-epochs", "1",
        "--fidelity-images", "0", "--second-images", "0", "--out", str(out),
    ])
    again = json.loads(out.read_text())
    first_run = {"date": results["date"][:10], "commit": results["commit"]}
    kept = [row for row in again["rows"] if row["image_size"] == 32]
    assert [row["test_accuracy"] for row in kept] == [
        row["test_accuracy"] for row in results["rows"]]
    assert all(row["measured_on"] == first_run for row in kept)
    assert {(row["model"], row["image_size"]) for row in again["rows"]} == {
        ("FineTuner", 32), ("LogisticRegression", 32), ("FineTuner", 40)}
    assert {verdict["image_size"] for verdict in again["verdicts"]} == {32, 40}
    for section in ("shift_fidelity", "timing"):
        assert again[section]["measured_on"]["date"]
        assert again[section]["rows"] == results[section]["rows"]
    assert [row["test_accuracy"] for row in again["second_dataset"]] == [
        row["test_accuracy"] for row in results["second_dataset"]]


def test_bench_domain_shift(bench, dataset, tmp_path):
    out, plot = tmp_path / "domain_shift.json", tmp_path / "domain_shift.png"
    # 36 px: a feature-cache namespace of its own, so that the process-wide cache does
    # not serve test_bench_gridsearch's maps (it checks its disk cache fills).
    common = ["--weights", "random", "--image-size", "36", "--cv", "2", "--out", str(out),
              "--plot", str(plot)]
    bench("bench_domain_shift").main(
        ["--datasets", f"aid_tiny={dataset}", f"cats_tiny={dataset}", *common])
    results = json.loads(out.read_text())
    assert set(results["datasets"]) == {"aid_tiny", "cats_tiny"}
    first = results["datasets"]["aid_tiny"]
    layers = {(row["layer"], row["pooling"]) for row in first["probes"]}
    assert layers == {(str(layer), pooling) for layer in (3, 4, 5)
                      for pooling in ("avg", "flatten")} | {("3+4+5", "avg")}
    assert first["best_probe"]["validation_accuracy"] == max(
        row["validation_accuracy"] for row in first["probes"])
    assert len(first["grid_search"]["cv_table"]) == 6
    finetuner = first["finetuner"]
    assert finetuner["unfreeze_"] == 1 and finetuner["auto_probe_"]["n_images"] == 8
    assert 0 <= finetuner["test_accuracy"] <= 1
    assert set(first["verdicts"]) >= {"finetuner_minus_best_probe", "fit_minutes"}
    assert plot.stat().st_size > 0

    # One data set again without fine-tuning: the other's results and this one's
    # FineTuner are kept.
    bench("bench_domain_shift").main(
        ["--datasets", f"aid_tiny={dataset}", "--no-finetune", *common])
    again = json.loads(out.read_text())
    assert again["datasets"]["cats_tiny"] == results["datasets"]["cats_tiny"]
    assert again["datasets"]["aid_tiny"]["finetuner"] == finetuner
    assert again["datasets"]["aid_tiny"]["finetuner_measured_on"] == first["measured_on"]


def test_bench_accuracy(bench, dataset, tmp_path):
    out = tmp_path / "accuracy.json"
    bench("bench_accuracy").main([
        "--data", str(dataset), "--weights", "random", "--image-size", "32",
        "--limit", "4", "--mlp-epochs", "2", "--head-epochs", "1",
        "--fine-tune-epochs", "1", "--out", str(out),
    ])
    results = json.loads(out.read_text())
    assert results["images"] == {"train": 4, "validation": 4, "test": 4}
    rows = {(row["stage"], row["preprocessing"]): row for row in results["rows"]}
    assert set(rows) == {
        (stage, preprocessing)
        for stage in ("extract", "logreg", "mlp")
        for preprocessing in ("vgg16", "rescale")
    } | {("finetune", "vgg16")}
    for (stage, _), row in rows.items():
        assert row["seconds"] > 0
        if stage != "extract":
            assert 0 <= row["validation_accuracy"] <= 1
            assert 0 <= row["test_accuracy"] <= 1
    assert rows[("mlp", "rescale")]["published"] == 0.90
    extraction = results["extraction"]["rescale"]
    assert extraction["n_features"] == 512
    assert set(extraction["split_seconds"]) == {"train", "validation", "test"}


# Smoke-run arguments beside --data, --weights random and --out, for the scripts whose
# results plot_results.py reads.
TINY_RUNS = {
    "bench_throughput": [
        "--images", "6", "--sizes", "32", "40", "--layer", "block2_pool",
        "--batch-sizes", "1", "4", "--inputs", "arrays", "paths",
        "--calibration-images", "4", "--repeats", "2", "--gemm-size", "128",
        "--gemm-seconds", "0.01",
    ],
    "bench_memory": [
        # 30 paths > the 24 images of the dataset fixture: the list repeats
        "--image-size", "32", "--batch-size", "4", "--sizes", "4", "30",
    ],
    "bench_backbones": [
        # MobileNetV3Large beside VGG16 at 224 (native) gives issue 13's first ratio.
        "--backbones", "vgg16", "MobileNetV3Large", "--sizes", "32,native",
        "--images", "6", "--batch-size", "4", "--repeats", "2",
        "--backends", "tensorflow", "--accuracy", "--transformers", "none",
    ],
}


@pytest.fixture
def model_cache(monkeypatch, tmp_path):
    """Exports of the ONNX Runtime / OpenVINO backends go to a temporary KERAS_HOME."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """Folder of the smoke runs' results files, which test_plot_results reuses."""
    return tmp_path_factory.mktemp("results")


def run_tiny(bench, name, dataset, folder):
    out = folder / f"{name}.json"
    bench(name).main([
        "--data", str(dataset), "--weights", "random", *TINY_RUNS[name],
        "--out", str(out),
    ])
    return json.loads(out.read_text())


def test_bench_throughput(bench, dataset, smoke_results, model_cache):
    results = run_tiny(bench, "bench_throughput", dataset, smoke_results)
    backends = bench("bench_throughput").available_backends()
    assert "tensorflow" in backends
    assert results["calibration_images"] == 2  # the 8 train images less the 6 timed
    assert [limit["image_size"] for limit in results["limits"]] == [32, 40]
    for limit in results["limits"]:
        assert limit["gemm_gflops"] > 0 and limit["images_per_second"] > 0
    methods = {(row["image_size"], row["method"], row["input"], row["batch_size"])
               for row in results["rows"]}
    assert methods == {
        (size, method, kind, batch_size)
        for size in (32, 40)
        for kind in ("arrays", "paths")
        for method, batch_size in [("seed_loop", 20)] + [
            (f"extractor[{backend}]", batch) for backend in backends for batch in (1, 4)
        ]
    }
    for row in results["rows"]:
        assert len(row["seconds"]) == 2
        assert row["images_per_second"] > 0 and row["fraction_of_limit"] > 0
        assert row["vs_seed_loop"] > 0
        if row["method"] == "seed_loop":
            assert row["vs_seed_loop"] == 1 and row["rel_err_vs_tf"] is None
        elif row["backend"] in ("tensorflow", "onnxruntime", "openvino"):
            assert row["rel_err_vs_tf"] < 1e-4  # FP32 backends give TF's features
        else:
            assert row["rel_err_vs_tf"] > 0  # INT8: not TensorFlow's features
    targets = {(t["image_size"], t["input"], t["backend"], t["measure"])
               for t in results["targets"]}
    assert targets == {
        (size, kind, backend, measure)
        for size in (32, 40) for kind in ("arrays", "paths") for backend in backends
        for measure in bench("bench_throughput").TARGETS[backend]
    }
    for target in results["targets"]:
        assert target["met"] == (target["value"] >= target["target"])


def test_bench_quantize(bench, dataset, tmp_path, model_cache):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = tmp_path / "quantize.json"
    bench("bench_quantize").main([
        "--data", str(dataset), "--weights", "random", "--image-size", "32",
        "--layer", "block2_pool", "--limit", "6", "--out", str(out),
    ])
    results = json.loads(out.read_text())
    assert results["images"] == {"train": 6, "test": 6}
    rows = {row["precision"]: row for row in results["rows"]}
    assert set(rows) == {"fp32", "int8"}
    assert rows["int8"]["n_calibration_images"] == 6
    assert rows["fp32"]["n_calibration_images"] is None
    for row in rows.values():
        assert 0 <= row["test_accuracy"] <= 1
        assert row["fit_seconds"] > 0 and row["transform_seconds"] > 0
    assert results["accuracy_difference_points"] == pytest.approx(
        100 * (rows["int8"]["test_accuracy"] - rows["fp32"]["test_accuracy"])
    )
    points = results["accuracy_difference_points"]
    assert results["within_target"] == (abs(points) <= 0.5)
    assert 0 <= results["test_predictions_changed"] <= 6
    assert results["feature_relative_error"] > 0  # INT8 is not FP32
    assert -1 <= results["feature_correlation"] <= 1
    assert results["speedup"] > 0


def test_bench_gridsearch(bench, dataset, tmp_path):
    out = tmp_path / "gridsearch.json"
    bench("bench_gridsearch").main([
        "--data", str(dataset), "--weights", "random", "--image-size", "32",
        "--cv", "2", "--out", str(out),
    ])
    results = json.loads(out.read_text())
    assert results["images"] == 8
    assert results["transform_seconds"] > 0 and results["gridsearch_seconds"] > 0
    assert results["ratio"] > 0 and results["flops_ratio"] > 0
    assert results["cache_mb"] > 0  # the search ran through a fresh feature cache
    assert [row["layer"] for row in results["cv_results"]] == [3, 4, 5]
    assert results["best_layer"] in (3, 4, 5)


def test_bench_memory(bench, dataset, smoke_results):
    results = run_tiny(bench, "bench_memory", dataset, smoke_results)
    rows = results["rows"]
    assert [row["n_images"] for row in rows] == [4, 30]
    for row in rows:
        assert row["rss_before_mb"] > 0 and row["transform_peak_mb"] > 0
        assert row["ru_maxrss_mb"] > 0 and row["images_per_second"] > 0
        assert row["output_mb"] == pytest.approx(row["n_images"] * 512 * 4 / 2**20)
    assert "working_growth_mb" in results


def test_bench_backbones(bench, dataset, smoke_results, model_cache):
    results = run_tiny(bench, "bench_backbones", dataset, smoke_results)
    rows = results["rows"]
    assert {(row["backbone"], row["image_size"], row["native"], row["input"])
            for row in rows} == {
        (backbone, size, native, kind)
        for backbone in ("VGG16", "MobileNetV3Large")
        for size, native in ((32, None), (224, True))
        for kind in ("paths", "arrays")
    }
    params = {"VGG16": 14714688, "MobileNetV3Large": 2996352}
    for row in rows:
        assert row["backend"] == "tensorflow" and row["images"] == 6
        assert len(row["seconds"]) == 2  # one timing per round
        assert row["images_per_second"] > 0 and row["gflops"] > 0
        assert row["gflop_per_s"] == pytest.approx(
            row["images_per_second"] * row["gflops"])
        assert row["params"] == params[row["backbone"]]
        assert row["rss_loaded_mb"] > 0 and row["transform_peak_mb"] > 0
        assert row["weights"].startswith("random (seeded)")
        is_reference = (row["image_size"], row["input"]) == (224, "arrays")
        assert row.get("reference") == (
            {"VGG16": 7.3, "MobileNetV3Large": 134}[row["backbone"]]
            if is_reference else None)
    vgg16 = {row["image_size"]: row["gflops"] for row in rows
             if row["backbone"] == "VGG16"}
    assert vgg16[224] == pytest.approx(30.693261312)  # count_flops(5, 224)
    assert results["failures"] == []
    targets = {target["backbone"]: target for target in results["targets"]}
    assert set(targets) == {"MobileNetV3Large", "EfficientNetB0", "ConvNeXtTiny"}
    mobilenet = targets["MobileNetV3Large"]
    assert mobilenet["ratio"] == pytest.approx(
        mobilenet["images_per_second"] / mobilenet["vgg16_images_per_second"])
    assert mobilenet["met"] == (mobilenet["ratio"] >= 10)
    assert targets["ConvNeXtTiny"]["ratio"] is None  # not measured: n/a
    assert results["accuracy"] == {  # VGG16 only with a weights file
        "rows": [], "skipped": [{"backbone": "VGG16", "reason": "no weights file: random"}]
    }


def test_bench_backbones_auto_unfolded_and_agreement(bench, dataset, tmp_path):
    """backend="auto" and TensorFlow without folded batch norms beside the exports,
    each with its fit time (round 1 exports into the run's fresh KERAS_HOME) and the
    exports' agreement with TensorFlow."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from sklearn_convfeat._backend_choice import AUTO_RULES, cpu_kind

    results = bench("bench_backbones").main([
        "--data", str(dataset), "--weights", "random", "--backbones", "mobilenetv2",
        "--transformers", "none", "--sizes", "32", "--images", "4", "--batch-size", "4",
        "--repeats", "2", "--layer", "2", "--inputs", "paths", "--check-agreement",
        "--backends", "tensorflow", "tensorflow-unfolded", "onnxruntime", "openvino",
        "auto", "--out", str(tmp_path / "auto.json"),
    ])
    assert results["failures"] == []
    rows = {row["backend"]: row for row in results["rows"]}
    assert set(rows) == {"tensorflow", "tensorflow-unfolded", "onnxruntime", "openvino",
                         "auto"}
    assert rows["tensorflow-unfolded"]["backend_"] == "tensorflow"
    # 4 images at 32 px never pay for an export, but the processes before it left
    # both in the run's KERAS_HOME: auto runs its rule's first one on this CPU.
    rule = AUTO_RULES.get(cpu_kind(), {}).get("mobilenet_v2")
    assert rows["auto"]["backend_"] == (rule[0][0] if rule else "tensorflow")
    for row in rows.values():
        assert len(row["fit_seconds"]) == 2 and row["fit_first_s"] > 0
    for backend in ("onnxruntime", "openvino"):
        assert rows[backend]["backend_"] == backend
        assert rows[backend]["max_relative_error"] < 1e-4
        assert rows[backend]["cosine_min"] > 0.9999
    assert rows["tensorflow"]["cosine_min"] is None  # TensorFlow is the reference


def test_bench_backbones_transformers(bench, dataset, tmp_path, model_cache):
    """The keras-hub transformers' tiny shapes beside VGG16: preset folders built
    offline, rows with their FLOPs, parameters and ratio to VGG16, folders removed."""
    pytest.importorskip("keras_hub")
    out = tmp_path / "backbones_hub.json"
    labels = ["DINOv2-S/14", "SigLIP2-B/16", "CLIP-ViT-B/16"]
    results = bench("bench_backbones").main([
        "--data", str(dataset), "--weights", "random", "--backbones", "vgg16",
        "--transformers", "dinov2-s/14", "siglip2_b16", "CLIP-ViT-B/16",
        "--tiny-transformers", "--sizes", "224", "--images", "4", "--batch-size", "4",
        "--repeats", "1", "--backends", "tensorflow", "--inputs", "paths",
        "--out", str(out),
    ])
    assert json.loads(out.read_text())["rows"] == results["rows"]
    assert results["failures"] == []
    rows = {row["backbone"]: row for row in results["rows"]}
    assert list(rows) == ["VGG16", *labels]
    vgg16 = rows["VGG16"]
    assert vgg16["vs_vgg16"] == 1 and vgg16["source"] == "keras.applications"
    presets = {"DINOv2-S/14": "dinov2_small", "SigLIP2-B/16": "siglip2_base_patch16_224",
               "CLIP-ViT-B/16": "clip_vit_base_patch16"}
    for label in labels:
        row = rows[label]
        assert row["source"] == "keras-hub" and row["preset"] == presets[label]
        assert row["weights"].startswith("random") and row["image_size"] == 224
        assert row["layer"] == "final_norm" and row["n_features"] == 32  # avg, 32 wide
        assert row["vs_vgg16"] == pytest.approx(
            row["images_per_second"] / vgg16["images_per_second"])
        assert row["params"] > 0 and row["rss_loaded_mb"] > 0
        described = results["transformers"][label]
        assert described["preset"] == presets[label] and described["tiny"]
        assert (described["blocks"], described["width"]) == (2, 32)
    # DINOv2 (native 518) measured at 224: 16 x 16 patches of 14 px and a class token.
    # Dense layers (q, k, v, output; the MLP), both attention products and the patch
    # embedding, 2 x multiply-adds, 2 blocks of width 32, MLP 64.
    tokens, width, mlp, blocks = 16 * 16 + 1, 32, 64, 2
    dense = 2 * blocks * tokens * (4 * width * width + 2 * width * mlp)
    attention = 2 * blocks * 2 * tokens * tokens * width
    patches = 2 * 16 * 16 * width * 14 * 14 * 3
    assert rows["DINOv2-S/14"]["gflops"] * 1e9 == pytest.approx(dense + attention + patches)
    assert rows["DINOv2-S/14"]["native"] is None  # 224 is not its native size
    assert results["settings"]["transformers"] == labels
    with pytest.raises(SystemExit, match="not one of"):
        bench("bench_backbones").main(["--transformers", "dinov3", "--out",
                                       str(tmp_path / "x.json")])


def test_plot_results(bench, dataset, smoke_results, tmp_path, model_cache):
    pytest.importorskip("matplotlib")
    for name in TINY_RUNS:  # the files of the smoke tests above, unless run alone
        if not (smoke_results / f"{name}.json").is_file():
            run_tiny(bench, name, dataset, smoke_results)
    written = bench("plot_results").main([
        "--results", str(smoke_results), "--out-dir", str(tmp_path / "docs"),
    ])
    assert sorted(path.name for path in written) == [
        "backbones.png", "memory.png", "throughput.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cam(bench, dataset, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cam.json"
    figures = tmp_path / "figures"
    methods = ["gradcam", "layercam+aug_smooth", "gradcam+smoothgrad", "scorecam"]
    bench("bench_cam").main([
        "--data", str(dataset), "--weights", "random", "--image-size", "32",
        "--head-epochs", "1", "--fine-tune-epochs", "1", "--limit", "8", "--show", "2",
        "--images", "4", "--road-images", "3", "--expensive-images", "2",
        "--max-channels", "4", "--memory-calls", "2", "--methods", *methods,
        "--figures", str(figures),
        "--models", str(tmp_path / "models"), "--out", str(out),
    ])
    results = json.loads(out.read_text())
    assert results["complete"]
    assert [(row["model"], row["method"]) for row in results["rows"]] == [
        (model, method) for model in ("finetuner", "logreg_pipeline") for method in methods
    ]
    # Gradient methods on all 4 images, the others on the 3 ROAD images, the
    # expensive ones on 2 of those; ROAD and confidence on the ROAD images only.
    images = {"gradcam": 4, "layercam+aug_smooth": 3, "gradcam+smoothgrad": 3,
              "scorecam": 2}
    for row in results["rows"]:
        assert row["images"] == images[row["method"]]
        assert row["road_images"] == min(images[row["method"]], 3)
        assert len(row["deletion_per_image"]) == row["images"]
        assert len(row["road_per_image"]) == row["road_images"]
        for metric in ("deletion", "insertion"):
            assert 0 <= row[metric] <= 1 and 0 <= row[f"random_{metric}"] <= 1
        assert row["beats_random_deletion"] == (row["deletion"] < row["random_deletion"])
        assert 0 <= row["confidence"] <= 100 and row["seconds_per_image"] > 0
    for model in ("finetuner", "logreg_pipeline"):
        assert (figures / f"cam_methods_{model}.png").stat().st_size > 0
        baseline = results["random_baselines"][model]
        assert baseline["measured_with"] == "gradcam"
        assert baseline["road"].count(None) == 1 and None not in baseline["deletion"]
    memory = results["memory"]
    assert memory["calls"] == 2 and memory["rss_after_mb"] > 0
    assert len(results["shown_images"]) == 2 and len(results["expensive_images"]) == 2
    assert len(results["road_images"]) == 3
    # A second run loads the saved models instead of fitting them again.
    again = bench("bench_cam").main([
        "--data", str(dataset), "--weights", "random", "--image-size", "32",
        "--images", "2", "--methods", "gradcam", "--memory-calls", "1",
        "--figures", str(figures), "--models", str(tmp_path / "models"),
        "--out", str(tmp_path / "again.json"),
    ])
    assert again["fit_seconds"] == {"finetuner": None, "logreg_pipeline": None}


# --- the reliability benchmarks (photo resolution, JPEG draft decoding) -------------


def test_bench_memory_against_resolution(bench, tmp_path):
    out = tmp_path / "memory.json"
    results = bench("bench_memory").main([
        "--parts", "resolution", "--weights", "random", "--photos-per-resolution", "2",
        "--image-size", "32", "--batch-size", "2", "--out", str(out),
    ])
    written = json.loads((tmp_path / "memory_resolution.json").read_text())
    assert written["rows"] == results["rows"]
    assert [row["resolution"] for row in results["rows"]] == ["0.3 MP", "12 MP"]
    for row in results["rows"]:
        assert row["n_images"] == 2 and row["transform_peak_mb"] > 0
    assert results["peak_ratio"] > 0 and results["target_peak_ratio"] == 2.0


def test_bench_draft(bench, tmp_path):
    for split in ("train", "validation", "test"):
        make_image_folder(tmp_path / "data" / split, {"cats": 3, "dogs": 3},
                          size=(96, 96), ext=".jpg")
    out = tmp_path / "draft.json"
    bench("bench_draft").main([
        "--data", str(tmp_path / "data"), "--weights", "random", "--image-sizes", "32",
        "--out", str(out),
    ])
    rows = json.loads(out.read_text())["rows"]
    assert [(row["image_size"], row["draft"]) for row in rows] == [(32, "off"), (32, "on")]
    assert rows[0]["drafted"] == 0 and rows[1]["drafted"] == 1.0  # 96 / 32 = 3 >= 2
    assert rows[1]["pixel_mad"] > 0
    for row in rows:
        assert 0 <= row["test_accuracy"] <= 1



def test_bench_refit(bench, tmp_path):
    out = tmp_path / "refit.json"
    bench("bench_refit").main(["--fits", "3", "--estimators", "mlp", "--out", str(out)])
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert row["estimator"] == "mlp" and len(row["rss_mb"]) == 3
    assert row["rss_mb"][0] > 0 and row["mb_per_fit"] == pytest.approx(
        row["rss_mb"][2] - row["rss_mb"][1], abs=0.11
    )


def test_bench_main_job(bench, dataset, tmp_path):
    results = bench("bench_main_job").main([
        "--data", str(dataset), "--weights", "random",
        "--extra=--image-size 32 --layer 3 --quiet",
        "--out", str(tmp_path / "main_job.json"),
    ])
    rows = {row["backend"]: row for row in results["rows"]}
    assert set(rows) == {"auto", "tensorflow"}
    for row in rows.values():
        assert row["backend_"] == "tensorflow"  # VGG16: no exported backend is faster
        assert row["seconds"] > 0
        assert {row["train"], row["validation"], row["test"]} <= {
            k / 8 for k in range(9)
        }
    assert results["auto_over_tensorflow"] == pytest.approx(
        rows["auto"]["seconds"] / rows["tensorflow"]["seconds"])
