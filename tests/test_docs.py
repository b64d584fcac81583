"""The documentation site builds, warnings as errors, with its example gallery.

The build runs the README's documented command on a copy of ``docs/``, ``examples/``
and ``benchmarks/results/`` in a temporary folder, so it neither reads nor leaves
build outputs in the checkout. It needs the ``docs`` extra and takes about a minute
on 2 CPU cores (the gallery runs in its offline mode); ``-m "not docs"`` skips it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sklearn_convfeat

REPO = Path(__file__).resolve().parents[1]
BUILD_OUTPUTS = ("_build", "generated", "auto_examples", "sg_execution_times.rst")
# The command the README and docs/index.md document, after "python".
BUILD_COMMAND = "-m sphinx -W --keep-going -b html docs docs/_build/html"


def test_the_build_command_is_the_documented_one():
    for page in ("README.md", "docs/index.md"):
        assert f"python {BUILD_COMMAND}" in (REPO / page).read_text(), page


def test_api_page_lists_every_public_name():
    api = (REPO / "docs" / "api.rst").read_text()
    listed = {line.strip() for line in api.splitlines()}
    missing = [
        name
        for name in sklearn_convfeat.__all__
        if name != "__version__" and name not in listed
    ]
    assert not missing, f"add {missing} to an autosummary list of docs/api.rst"


@pytest.mark.docs
@pytest.mark.slow
def test_the_documentation_builds_without_warnings(tmp_path):
    for module in ("sphinx", "sphinx_gallery", "numpydoc", "myst_parser"):
        pytest.importorskip(module)
    pytest.importorskip("pydata_sphinx_theme")
    pytest.importorskip("matplotlib")
    shutil.copytree(
        REPO / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns(*BUILD_OUTPUTS)
    )
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(
        REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    for name in ("SKLEARN_CONVFEAT_WEIGHTS", "SKLEARN_CONVFEAT_DATA"):
        env.pop(name, None)  # the offline gallery, whatever the developer has set
    result = subprocess.run(
        [sys.executable, *BUILD_COMMAND.split()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    warnings = [  # Sphinx's own; TensorFlow's start-up log lines aside
        line
        for line in result.stderr.splitlines()
        if ("WARNING" in line or "ERROR" in line) and "absl::" not in line
    ]
    assert result.returncode == 0, "\n".join(warnings[-30:]) or result.stderr[-3000:]
    html = tmp_path / "docs" / "_build" / "html"
    for page in (
        "index",
        "user_guide",
        "cam",
        "benchmarks",
        "api",
        "generated/sklearn_convfeat.ConvFeatureExtractor",
        "auto_examples/plot_cam_overlays",
        "auto_examples/plot_cut_depth",
        "auto_examples/plot_finetune_history",
    ):
        assert (html / f"{page}.html").is_file(), page
    figures = sorted(p.name for p in (html / "_images").glob("sphx_glr_plot_*.png"))
    assert any(name.startswith("sphx_glr_plot_cam_overlays_") for name in figures)
    assert any(name.startswith("sphx_glr_plot_cut_depth_") for name in figures)
    assert any(name.startswith("sphx_glr_plot_finetune_history_") for name in figures)
