import subprocess
import sys

import joblib
import pytest

from conftest import make_image_folder
from sklearn_convfeat.cli import main


@pytest.fixture
def dataset(tmp_path):
    for split in ("train", "validation", "test"):
        make_image_folder(tmp_path / "data" / split, {"cats": 4, "dogs": 4})
    return tmp_path / "data"


def test_evaluate_reports_every_split_and_saves_the_pipeline(dataset, tmp_path, capsys):
    saved = tmp_path / "model.joblib"
    status = main([
        "evaluate", str(dataset), "--weights", "random", "--image-size", "32",
        "--pooling", "avg", "--save", str(saved), "--quiet",
    ])
    out = capsys.readouterr().out
    assert status == 0
    table = out[out.index("split "):].splitlines()[1:4]
    rows = {line.split()[0]: line.split() for line in table}
    assert set(rows) == {"train", "validation", "test"}
    assert rows["test"][1] == "8" and 0.0 <= float(rows["test"][2]) <= 1.0
    pipeline = joblib.load(saved)
    predictions = pipeline.predict([str(p) for p in sorted((dataset / "test").rglob("*.png"))])
    assert set(predictions) <= {"cats", "dogs"}


def test_evaluate_with_the_mlp_head(dataset, capsys):
    assert main([
        "evaluate", str(dataset), "--weights", "random", "--image-size", "32",
        "--pooling", "avg", "--classifier", "mlp", "--layer", "4", "--quiet",
    ]) == 0
    assert "validation" in capsys.readouterr().out


def test_missing_train_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--weights", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convfeat: error: DATA_DIR must hold a train/ folder")
    assert "\n" not in err


def test_bad_parameter_is_a_one_line_error(dataset, capsys):
    assert main(["evaluate", str(dataset), "--weights", "random", "--layer", "blok5"]) == 2
    assert "'layer' parameter" in capsys.readouterr().err


def test_the_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_convfeat.cli", "evaluate", "--help"],
        capture_output=True, text=True, check=True,
    )
    assert "DATA_DIR" in result.stdout and "--weights" in result.stdout


def test_classes_must_match_between_splits(dataset, capsys):
    make_image_folder(dataset / "test", {"birds": 2})
    assert main(["evaluate", str(dataset), "--weights", "random", "--image-size", "32", "--quiet"]) == 2
    assert "class sub-folders must match" in capsys.readouterr().err
