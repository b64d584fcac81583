"""compare_backbones and ``convfeat compare``: ranking candidates by cross-validated
probe accuracy, with the feature cache running the base once per image and backbone."""

import csv

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_convfeat import ConvFeatureExtractor, compare_backbones
from sklearn_convfeat._compare import _rank_key
from sklearn_convfeat.cli import main

TINY = dict(weights=None, image_size=(32, 32), random_state=0)
CLI_TINY = ["--weights", "random", "--image-size", "32"]


@pytest.fixture
def data():
    """12 images, two classes told apart by brightness."""
    X = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    X[6:] //= 3
    return X, np.array(["bright"] * 6 + ["dark"] * 6)


def test_one_row_per_candidate_best_first(data, empty_ram_cache):
    X, y = data
    result = compare_backbones(X, y, layers=[3, 4, 5], poolings=["avg", "max"], cv=3, **TINY)
    rows = result.rows
    assert len(rows) == 6 and result.best is rows[0]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5, 6]
    scores = [row["mean_test_score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert {(row["layer"], row["layer_name"], row["pooling"], row["n_features"]) for row in rows} == {
        (3, "block3_pool", "avg", 256), (3, "block3_pool", "max", 256),
        (4, "block4_pool", "avg", 512), (4, "block4_pool", "max", 512),
        (5, "block5_pool", "avg", 512), (5, "block5_pool", "max", 512),
    }
    assert result.columns == tuple(rows[0]) and result.columns[:8] == (
        "rank", "backbone", "layer", "layer_name", "pooling", "n_features",
        "mean_test_score", "std_test_score",
    )
    for row in rows:
        folds = [row[f"split{k}_test_score"] for k in range(3)]
        assert row["mean_test_score"] == pytest.approx(np.mean(folds))
        assert row["std_test_score"] == pytest.approx(np.std(folds))
        assert row["images_per_second"] == pytest.approx(12 / row["extract_seconds"])
    # Speed is measured from the pixels to each cut: a deeper cut is slower.
    speed = {row["layer_name"]: row["images_per_second"] for row in rows}
    assert speed["block3_pool"] > speed["block4_pool"] > speed["block5_pool"]
    # The refitted winner: its extractor, with the weights random_state=0 gives any
    # extractor, and its probe fitted on all of X.
    best = result.best_estimator
    assert isinstance(best, Pipeline) and best["feat"].layer_ == result.best["layer_name"]
    assert best["feat"].memory is None  # the temporary cache folder is gone
    assert best["feat"].weights_sha256_ == ConvFeatureExtractor(**TINY).fit(X).weights_sha256_
    assert best.predict(X).shape == (12,)


def test_ties_go_to_the_faster_cut(data, empty_ram_cache):
    X, y = data
    # A probe that scores every candidate alike: the speed decides, shallowest first.
    result = compare_backbones(
        X, y, layers=[5, 3, 4], cv=3, classifier=DummyClassifier(), refit=False, **TINY
    )
    assert [row["layer_name"] for row in result.rows] == [
        "block3_pool", "block4_pool", "block5_pool",
    ]
    assert result.best_estimator is None
    rows = [
        {"mean_test_score": 0.9, "images_per_second": float("nan")},
        {"mean_test_score": 0.9, "images_per_second": 3.0},
        {"mean_test_score": 0.8, "images_per_second": 100.0},
        {"mean_test_score": 0.9, "images_per_second": 5.0},
    ]
    assert [rows.index(row) for row in sorted(rows, key=_rank_key)] == [3, 1, 0, 2]


def test_the_base_runs_once_per_image_and_backbone(
    data, tmp_path, segment_calls, empty_ram_cache
):
    X, y = data
    result = compare_backbones(
        X, y, backbones=["vgg16", "VGG16"], layers=[5, 3, "block4_pool", 4],
        poolings=["avg", "max", "avg"], cv=3, memory=tmp_path, batch_size=32, **TINY,
    )
    # Candidates that come to the same cut are compared once: 3 cuts × 2 poolings.
    assert len(result.rows) == 6
    # Shallowest cut first, each deeper one resuming from the cached maps of the last:
    # every layer of the base ran once per image; the refit was served by the cache.
    assert segment_calls == [
        (None, "block3_pool", 12),
        ("block3_pool", "block4_pool", 12),
        ("block4_pool", "block5_pool", 12),
    ]
    namespaces = list((tmp_path / "sklearn_convfeat").iterdir())
    assert len(namespaces) == 1
    for layer in ("block3_pool", "block4_pool", "block5_pool"):
        assert len(list((namespaces[0] / layer).rglob("*.map"))) == 12
    assert result.best_estimator["feat"].memory == tmp_path  # the user's folder stays


def test_maps_cached_before_leave_the_speed_unmeasured(data, empty_ram_cache, capsys):
    X, y = data
    ConvFeatureExtractor(layer=4, memory=tmp_memory(), **TINY).fit_transform(X)
    result = compare_backbones(X, y, layers=[3, 4, 5], cv=3, verbose=1, **TINY)
    # block3 and block4 were cached by that pass, and block5 resumed from them.
    assert all(np.isnan(row["images_per_second"]) for row in result.rows)
    out = capsys.readouterr().out
    assert out.startswith("comparing 3 candidate(s) on 12 images, 2 classes, 3-fold CV")
    assert "vgg16: maps up to block3_pool of 12 images in" in out
    assert out.count("maps cached before: speed not measured") == 3
    assert "[3/3] vgg16 block5_pool avg: 512 features, CV accuracy" in out


def tmp_memory():
    import joblib

    return joblib.Memory(None)  # the in-memory cache only


def test_progress_goes_to_the_callable_and_knn_probe(data, empty_ram_cache):
    X, y = data
    lines = []
    result = compare_backbones(
        X, y, layers=4, poolings="max", cv=2, classifier="knn", progress=lines.append,
        verbose=1, **TINY,
    )
    assert len(result.rows) == 1
    assert lines[0].endswith("2-fold CV of a KNeighborsClassifier probe")
    assert lines[-1].startswith("[1/1] vgg16 block4_pool max: 512 features")
    assert result.best_estimator["clf"][-1].n_neighbors == 5


@pytest.mark.parametrize(
    "params, error, message",
    [
        (dict(cv=7), ValueError, r"`cv=7` needs at least 7 images of each class \(stratified folds\); class 'bright' has 6. Pass cv=6 or less"),
        (dict(cv=1), InvalidParameterError, "The 'cv' parameter of compare_backbones must be"),
        (dict(layers=[]), ValueError, r"`layers` must be a list of stage numbers 1-5 or layer names; got \[\]: it is empty. Pass e.g. layers=\[3, 4, 5\]"),
        (dict(layers=[3, 9]), ValueError, r"`layers` must be a list of stage numbers 1-5 or layer names; got \[3, 9\]: 9 is not one"),
        (dict(layers=True), InvalidParameterError, "The 'layers' parameter of compare_backbones"),
        (dict(layers=["blok5"]), ValueError, "`layer` must be a stage number .* or the name of a layer of VGG16. Got 'blok5'"),
        (dict(poolings=["avg", "mean"]), ValueError, "`poolings` must be a list of poolings, each a str among {.*'max'.*}; got "
         r"\['avg', 'mean'\]: 'mean' is not one. Pass e.g. poolings=\[\"avg\", \"max\"\]"),
        (dict(poolings=[1]), ValueError, r"`poolings` must be a list of poolings, each a str among .*; got \[1\]: 1 is not one"),
        (dict(backbones=[]), ValueError, "`backbones` must be a list of backbone names or models; got"),
        (dict(backbones=["vgg17"]), ValueError, "vgg17"),
        (dict(classifier="svm"), InvalidParameterError, "The 'classifier' parameter of compare_backbones must be"),
    ],
)
def test_bad_parameters_are_clear_errors(data, params, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        compare_backbones(X, y, **{"cv": 3, **TINY, **params})


def test_bad_targets_are_clear_errors(data):
    X, y = data
    with pytest.raises(ValueError, match=r"`y` must hold at least two classes to compare classifiers; got 1 \(\['a'\]\)"):
        compare_backbones(X, ["a"] * 12, **TINY)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        compare_backbones(X, y[:10], **TINY)
    with pytest.raises(ValueError, match="Unknown label type"):
        compare_backbones(X, np.linspace(0, 1, 12), **TINY)


# ----------------------------------------------------------------------- command line


@pytest.fixture
def dataset(tmp_path):
    for split in ("train", "test"):
        make_image_folder(tmp_path / "data" / split, {"cats": 6, "dogs": 6}, size=(32, 32))
    return tmp_path / "data"


def test_compare_writes_the_csv_the_plot_and_the_best_line(
    dataset, tmp_path, capsys, empty_ram_cache
):
    pytest.importorskip("matplotlib")
    out, plot = tmp_path / "results.csv", tmp_path / "compare.png"
    argv = ["compare", str(dataset), *CLI_TINY, "--layer", "3", "block4_pool", "5",
            "--pooling", "avg", "max", "--cv", "3", "-o", str(out), "--plot", str(plot),
            "--test", "--quiet"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "12 images, classes ['cats', 'dogs']"  # train/ only
    start = lines.index(next(line for line in lines if line.startswith("ranked by")))
    assert lines[start].startswith("ranked by mean CV accuracy (3-fold CV, 12 images, ")
    assert lines[start + 1].split() == [
        "rank", "backbone", "layer", "pooling", "features", "CV", "accuracy", "images/s",
    ]
    table = [line.split() for line in lines[start + 2 : start + 8]]
    assert [cells[0] for cells in table] == ["1", "2", "3", "4", "5", "6"]
    assert {cells[2] for cells in table} == {"block3_pool", "block4_pool", "block5_pool"}
    assert lines[-1].startswith(f"best: vgg16 {table[0][2]} {table[0][3]} (")
    assert "; test/ accuracy " in lines[-1] and lines[-1].endswith("(12 images)")
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and [row["rank"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert {"layer", "layer_name", "mean_test_score", "images_per_second"} <= set(rows[0])
    assert [row["layer"] for row in rows].count("block4_pool") == 2
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_compare_a_class_folder_with_progress(tmp_path, capsys, empty_ram_cache):
    folder = make_image_folder(tmp_path / "flat", {"a": 4, "b": 4}, size=(32, 32))
    memory = tmp_path / "cache"
    assert main(["compare", str(folder), *CLI_TINY, "--layer", "4", "--cv", "2",
                 "--classifier", "knn", "--memory", str(memory)]) == 0
    # block4_pool, and block3_pool on the way: kept for later runs.
    assert len(list(memory.rglob("*.map"))) == 8 * 2
    out = capsys.readouterr().out
    assert "comparing 1 candidate(s) on 8 images, 2 classes, 2-fold CV of a " in out
    assert "vgg16: maps up to block4_pool of 8 images in " in out
    assert "[1/1] vgg16 block4_pool avg: 512 features, CV accuracy " in out
    assert out.strip().splitlines()[-1].startswith("best: vgg16 block4_pool avg (512")


def test_help(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--help"])
    assert exit.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert help_text.startswith("usage: convfeat compare ")
    assert "--layer LAYER [LAYER ...]" in help_text and "images/s is measured" in help_text


@pytest.fixture
def layouts(dataset, tmp_path):
    make_image_folder(tmp_path / "flat", {"a": 2, "b": 2}, size=(32, 32))
    make_image_folder(tmp_path / "only_train" / "train", {"a": 2, "b": 2}, size=(32, 32))
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "-o", "r.txt"], "-o 'r.txt' must end in .csv: the extension chooses"),
        (["data", "--plot", "p.gif"], "--plot 'p.gif' must end in .png or .svg or .pdf"),
        (["data", "--plot", "no/p.png"], "--plot 'no/p.png' cannot be written: its folder"),
        (["nowhere"], "DATA_DIR 'nowhere' is not a folder."),
        (["flat", "--test"], "--test needs DATA_DIR/train and DATA_DIR/test (or validation): 'flat' has no train/ folder"),
        (["only_train", "--test"], "--test needs DATA_DIR/test or DATA_DIR/validation to score the winner on: 'only_train' holds train/ only"),
        (["data", "--cv", "1"], "--cv 1 is refused: cross-validation needs at least 2 folds. Pass --cv 2 or more"),
        (["flat", "--cv", "3"], "--cv 3 is more than the 2 images of class 'a': each fold needs an image of every class. Pass --cv 2 or less"),
        (["data", "--weights", "vgg.h5"], "--weights 'vgg.h5' is not a file"),
        (["data", *CLI_TINY, "--layer", "3", "9"], "`layers` must be a list of stage numbers 1-5 or layer names; got [3, 9]: 9 is not one"),
        (["data", *CLI_TINY, "--layer", "blok5"], "`layer` must be a stage number"),
    ],
)
def test_bad_input_is_a_one_line_error(layouts, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(layouts)
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convfeat compare: error: ") and message in err, err
    assert err.count("\n") == 1


def test_plot_without_matplotlib_names_the_extra(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["compare", str(dataset), "--plot", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == (
        "convfeat compare: error: --plot needs matplotlib, which is not installed: pip "
        "install matplotlib (or the 'plot' extra: pip install "
        "'sklearn-convfeat[plot]'), or leave --plot out.\n"
    )


def test_bad_pooling_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["compare", "data", "--pooling", "avg", "mean"])
    assert exit.value.code == 2
    assert "argument --pooling: invalid choice: 'mean'" in capsys.readouterr().err


@pytest.mark.slow
def test_through_a_subprocess(dataset, tmp_path):
    from test_cli import convfeat, finish

    out = tmp_path / "r.csv"
    result = finish(convfeat("compare", dataset, *CLI_TINY, "--cv", "2", "-o", out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("best: vgg16 block")
    assert "Traceback" not in result.stderr
    with open(out, newline="") as file:
        assert len(list(csv.DictReader(file))) == 3
