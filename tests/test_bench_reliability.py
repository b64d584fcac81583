"""Smoke runs of the reliability benchmarks on tiny offline inputs."""

import json
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        import importlib

        return importlib.import_module(name)

    yield load
    for name in [n for n in sys.modules if n.startswith("bench_") or n == "_common"]:
        del sys.modules[name]


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
