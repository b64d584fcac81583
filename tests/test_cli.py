"""The ``convfeat`` command line: each subcommand once through a real subprocess (the
entry point, argument parsing, exit status, no traceback), the rest in-process."""

import importlib.util
import os
import re
import subprocess
import sys

import joblib
import numpy as np
import pytest
from conftest import fresh_keras_home, make_image_folder
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_convfeat import ConvFeatureExtractor, FineTuner, load
from sklearn_convfeat.cli import main

TINY = ["--weights", "random", "--image-size", "32"]


def convfeat(*args):
    """Start ``python -m sklearn_convfeat.cli ARGS`` as the shell would."""
    env = dict(os.environ)
    env.pop("SKLEARN_CONVFEAT_WEIGHTS", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command line quiets TensorFlow itself
    return subprocess.Popen(
        [sys.executable, "-m", "sklearn_convfeat.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def error_of(result):
    """The command's own error line; TensorFlow's C++ start-up log lines aside."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def make_dataset(root):
    for split in ("train", "validation", "test"):
        make_image_folder(root / split, {"cats": 4, "dogs": 4}, size=(32, 32))
    return root


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data")


def image_paths(folder):
    return [str(p) for p in sorted(folder.rglob("*.png"))]


# ------------------------------------------------------------------- through a subprocess


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One real run of each command, started side by side: each pays TensorFlow's
    import, so running them together keeps this file fast (a minute: the slow tier)."""
    root = tmp_path_factory.mktemp("cli")
    data = make_dataset(root / "data")
    started = {
        "evaluate": convfeat(
            "evaluate", data, *TINY, "--pooling", "avg", "--save", root / "model.skops"
        ),
        "finetune": convfeat(
            "finetune",
            data,
            *TINY,
            "--head-epochs",
            "2",
            "--fine-tune-epochs",
            "1",
            "--batch-size",
            "4",
            "--save",
            root / "tuner.skops",
        ),
        "missing": convfeat("extract", root / "nowhere", "-o", root / "f.npy"),
        "unfreeze": convfeat("finetune", data, *TINY, "--unfreeze", "9"),
    }
    if importlib.util.find_spec("pyarrow") and importlib.util.find_spec("pandas"):
        started["extract"] = convfeat(
            "extract",
            data / "train",
            "-o",
            root / "train.parquet",
            *TINY,
            "--pooling",
            "avg",
        )
    results = {"evaluate": finish(started.pop("evaluate"))}
    image = image_paths(data / "test")[0]
    started["cam"] = convfeat(
        "cam",
        image,
        "--model",
        root / "model.skops",
        "-o",
        root / "cam.png",
        "--target",
        "dogs",
    )
    results.update((name, finish(process)) for name, process in started.items())
    return root, results


@pytest.mark.slow
def test_extract_writes_parquet_with_paths_labels_and_the_extractors_features(runs):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    root, results = runs
    result, out = results["extract"], root / "train.parquet"
    assert result.returncode == 0, result.stderr
    assert f"wrote 8×512 features (block5_pool, avg) to {out}" in result.stdout
    table = pd.read_parquet(out)
    paths = image_paths(root / "data" / "train")
    assert table["path"].tolist() == paths
    assert table["label"].tolist() == ["cats"] * 4 + ["dogs"] * 4
    extractor = ConvFeatureExtractor(
        weights=None, image_size=32, pooling="avg", random_state=0
    ).fit(paths)
    assert table.columns[2:].tolist() == extractor.get_feature_names_out().tolist()
    np.testing.assert_allclose(
        table.iloc[:, 2:].to_numpy(), extractor.transform(paths), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_evaluate_reports_every_split_and_saves_the_pipeline(runs):
    root, results = runs
    result = results["evaluate"]
    assert result.returncode == 0, result.stderr
    table = result.stdout[result.stdout.index("split ") :].splitlines()[1:4]
    assert [line.split()[:2] for line in table] == [
        ["train", "8"],
        ["validation", "8"],
        ["test", "8"],
    ]
    assert all(0.0 <= float(line.split()[2]) <= 1.0 for line in table)
    assert "backend: tensorflow" in result.stdout  # what "auto" chose for VGG16
    pipeline = load(root / "model.skops")
    assert set(pipeline.predict(image_paths(root / "data" / "test"))) <= {
        "cats",
        "dogs",
    }


@pytest.mark.slow
def test_cam_writes_the_overlay_of_the_saved_pipeline(runs):
    root, results = runs
    result = results["cam"]
    assert result.returncode == 0, result.stderr
    assert "class 'dogs' (p=" in result.stdout
    with Image.open(root / "cam.png") as written:
        assert written.format == "PNG" and written.size == (32, 32)


@pytest.mark.slow
def test_finetune_reports_accuracy_and_saves_a_fitted_tuner(runs):
    root, results = runs
    result = results["finetune"]
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"phase 1 ran 2 epoch\(s\), phase 2 1 \(unfreeze 1, learning rates "
        r"(0.0001/1e-05|0.001/0.0001), pooling (flatten|avg), augment '(cached|dihedral)'\); "
        r"frozen-prefix cache: memory",
        result.stdout,
    )
    rows = result.stdout[result.stdout.index("split ") :].splitlines()[1:3]
    assert [row.split()[:2] for row in rows] == [["validation", "8"], ["test", "8"]]
    assert "wall time (fit + evaluate):" in result.stdout
    assert "Epoch 1/2" in result.stdout  # Keras' progress bars, not --quiet
    tuner = load(root / "tuner.skops")
    assert isinstance(tuner, FineTuner) and tuner.history_["phase"] == [1, 1, 2]
    assert set(tuner.predict(image_paths(root / "data" / "test"))) <= {"cats", "dogs"}


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(runs):
    root, results = runs
    # Bad paths are found before TensorFlow is imported: stderr is that one line.
    assert results["missing"].stderr == (
        f"convfeat extract: error: INPUT {str(root / 'nowhere')!r} does not exist. "
        "Give a class-per-folder directory, a folder of images, or a text file listing "
        "image paths (one per line).\n"
    )
    assert results["missing"].returncode == 2
    # An error after TensorFlow loaded is that one line too: no start-up log lines.
    assert results["unfreeze"].returncode == 2
    assert results["unfreeze"].stderr == (
        "convfeat finetune: error: The 'unfreeze' parameter of FineTuner must be an int "
        "in the range [0, 5] or a str among {'auto'}. Got 9 instead.\n"
    )


# ---------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("command", ["extract", "evaluate", "finetune", "cam"])
def test_help_of_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: convfeat {command} ")


def test_extract_a_plain_folder_and_a_list_file_to_npy(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", {"x": 3}, size=(32, 32)) / "x"
    paths = image_paths(folder)
    listing = tmp_path / "list.txt"
    # Comments and blank lines are skipped; relative paths are read from the list's folder.
    listing.write_text(f"# two images\n\nimages/x/x.2.png\n{paths[0]}\n")
    expected = ConvFeatureExtractor(
        weights=None, image_size=32, layer=3, pooling="max", random_state=0
    ).fit_transform(paths)
    for source, rows in [(folder, [0, 1, 2]), (listing, [2, 0])]:
        out = tmp_path / "features.npy"
        assert (
            main(
                [
                    "extract",
                    str(source),
                    "-o",
                    str(out),
                    *TINY,
                    "--layer",
                    "3",
                    "--pooling",
                    "max",
                    "--quiet",
                ]
            )
            == 0
        )
        np.testing.assert_allclose(np.load(out), expected[rows], rtol=1e-5, atol=1e-5)
    assert "wrote 2×256 features (block3_pool, max)" in capsys.readouterr().out


def test_extract_skips_unreadable_files_when_asked(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", {"x": 2}, size=(32, 32)) / "x"
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "features.npy"
    args = ["extract", str(folder), "-o", str(out), *TINY, "--quiet"]
    assert main(args) == 2
    assert "Cannot read image file" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        assert main([*args, "--skip-unreadable"]) == 0
    assert np.isnan(np.load(out)[0]).all()  # broken.png sorts first
    assert "skipped row 0" in capsys.readouterr().out


@pytest.fixture
def layouts(tmp_path):
    mixed = make_image_folder(tmp_path / "mixed", {"a": 1, "b": 1}, size=(32, 32))
    Image.new("RGB", (32, 32)).save(mixed / "loose.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "comments.txt").write_text("# nothing\n\n")
    (tmp_path / "binary.dat").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "folder.skops").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "command, message",
    [
        (
            ["extract", "mixed", "-o", "f.npy"],
            "INPUT 'mixed' holds both image files and sub-folders of images (a, b)",
        ),
        (["extract", "empty", "-o", "f.npy"], "INPUT 'empty' holds no image files"),
        (["extract", "comments.txt", "-o", "f.npy"], "lists no image paths"),
        (
            ["extract", "binary.dat", "-o", "f.npy"],
            "INPUT 'binary.dat' is neither an image",
        ),
        (
            ["extract", "mixed/a", "-o", "f.csv"],
            "-o 'f.csv' must end in .npy or .parquet: the extension chooses the format.",
        ),
        (
            ["extract", "mixed/a", "-o", "mixed"],
            "-o 'mixed' must end in .npy or .parquet",
        ),
        (
            ["extract", "mixed/a", "-o", "no/such/f.npy"],
            "such' does not exist. Give a path",
        ),
        (
            ["extract", "mixed/a", "-o", "a_file/f.npy"],
            "a_file' is a file. Give a path in",
        ),
        (
            ["extract", "mixed/a", "-o", "f.npy", "--weights", "vgg.h5"],
            "--weights 'vgg.h5' is not a file. Give 'imagenet', 'random', or the path",
        ),
        (
            ["extract", "mixed/a", "-o", "f.npy", *TINY, "--layer", "blok5"],
            "`layer` must be a stage number",
        ),
        (
            ["extract", "mixed/a", "-o", "f.npy", *TINY, "--batch-size", "0"],
            "The 'batch_size' parameter of ConvFeatureExtractor must be an int in the range",
        ),
        (["evaluate", "empty"], "DATA_DIR must hold a train/ folder"),
        (["evaluate", "nowhere"], "DATA_DIR 'nowhere' is not a folder."),
        (
            ["evaluate", "mixed", "--save", "no/model.skops"],
            "--save 'no/model.skops' cannot",
        ),
        (["finetune", "empty", *TINY], "DATA_DIR must hold a train/ folder"),
        (["finetune", "mixed", "--save", "folder.skops"], "--save 'folder.skops' is a folder"),
        (
            ["cam", "missing.png", "--model", "m.joblib", "-o", "o.png"],
            "1 IMAGE file(s) do not exist: 'missing.png'.",
        ),
        # Output paths are checked before the model is even loaded (m.joblib is absent).
        (
            ["cam", "mixed/loose.png", "--model", "m.joblib", "-o", "nope/c.png"],
            "-o 'nope/c.png' cannot be written: its folder",
        ),
        (
            ["cam", "mixed/loose.png", "--model", "m.joblib", "-o", "nodir/{stem}.png"],
            "-o 'nodir/loose.png' cannot be written: its folder",
        ),
        (
            ["cam", "mixed/loose.png", "--model", "m.joblib", "-o", "overlay"],
            "-o 'overlay' must end in .png or .jpg",
        ),
        (
            ["cam", "mixed/loose.png", "--model", "m.joblib", "-o", "{stme}.png"],
            "-o '{stme}.png' is not a valid pattern (KeyError: 'stme'): the only field",
        ),
        (
            ["cam", "mixed/loose.png", "--model", "m.joblib", "-o", "{}.png"],
            "-o '{}.png' is not a valid pattern (IndexError",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(layouts, monkeypatch, capsys, command, message):
    monkeypatch.chdir(layouts)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convfeat {command[0]}: error: ") and message in err
    assert err.count("\n") == 1


def test_parquet_without_pyarrow_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    assert main(["extract", str(tmp_path), "-o", str(tmp_path / "f.parquet")]) == 2
    assert capsys.readouterr().err == (
        "convfeat extract: error: writing .parquet needs pandas and pyarrow (pyarrow is "
        "not installed): pip install pandas pyarrow (or the 'parquet' extra), or write "
        ".npy instead.\n"
    )


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["extract", "folder"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        "convfeat extract: error: the following arguments are required: -o/--output "
        "(see 'convfeat extract --help')\n"
    )
    with pytest.raises(SystemExit) as exit:
        main(["finetune", "folder", "--unfreeze", "deep"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        "convfeat finetune: error: argument --unfreeze: must be 'auto' or a number, "
        "e.g. 2; got 'deep' (see 'convfeat finetune --help')\n"
    )


def test_extract_on_another_backend(tmp_path, tmp_path_factory, capsys):
    pytest.importorskip("openvino")
    folder = make_image_folder(tmp_path / "images", {"x": 3}, size=(32, 32)) / "x"
    expected = ConvFeatureExtractor(
        weights=None, image_size=32, layer=2, pooling="avg", random_state=0
    ).fit_transform(image_paths(folder))
    out = tmp_path / "features.npy"
    with fresh_keras_home(tmp_path_factory):
        assert main(["extract", str(folder), "-o", str(out), *TINY, "--layer", "2",
                     "--pooling", "avg", "--backend", "openvino", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def test_evaluate_with_the_mlp_head(dataset, capsys):
    assert (
        main(
            [
                "evaluate",
                str(dataset),
                *TINY,
                "--pooling",
                "avg",
                "--classifier",
                "mlp",
                "--layer",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert "validation" in capsys.readouterr().out


def test_classes_must_match_between_splits(dataset, capsys):
    make_image_folder(dataset / "test", {"birds": 2})
    assert main(["evaluate", str(dataset), *TINY, "--quiet"]) == 2
    assert "class sub-folders must match" in capsys.readouterr().err
    assert main(["finetune", str(dataset), *TINY, "--quiet"]) == 2
    assert "class sub-folders must match" in capsys.readouterr().err


def test_extract_takes_a_single_class_folder(tmp_path, capsys):
    root = make_image_folder(tmp_path / "one", {"cats": 3}, size=(32, 32))
    out = tmp_path / "cats.npy"
    assert main(["extract", str(root), "-o", str(out), *TINY, "--quiet"]) == 0
    assert np.load(out).shape[0] == 3
    assert "classes ['cats']" in capsys.readouterr().out


def test_cam_reads_a_pickle_only_when_trusted(tmp_path, capsys):
    X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    image = tmp_path / "picture.png"
    Image.fromarray(X[0]).save(image)
    extractor = ConvFeatureExtractor(weights=None, image_size=32, random_state=0)
    pipeline = Pipeline([("feat", extractor), ("clf", LogisticRegression())])
    joblib.dump(pipeline.fit(X, [0, 1, 0, 1]), tmp_path / "model.joblib")
    args = ["cam", str(image), "--model", str(tmp_path / "model.joblib"),
            "-o", str(tmp_path / "cam.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a skops file" in err and "--trust-pickle" in err and err.count("\n") == 1
    assert not (tmp_path / "cam.png").exists()
    with pytest.warns(UserWarning, match="pickle"):
        assert main([*args, "--trust-pickle"]) == 0
    assert (tmp_path / "cam.png").is_file()


def test_cam_refuses_an_image_given_as_the_model(tmp_path, capsys):
    image = tmp_path / "picture.png"
    Image.new("RGB", (32, 32)).save(image)
    args = ["cam", str(image), "--model", str(image), "-o", str(tmp_path / "cam.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "KeyError" not in err and err.count("\n") == 1


def test_evaluate_without_data_dir_fetches_the_example_data(monkeypatch, capsys):
    from sklearn_convfeat import datasets

    def offline(**kwargs):
        raise OSError("no internet here; pass data_home or set SKLEARN_CONVFEAT_DATA")

    monkeypatch.setattr(datasets, "fetch_cats_and_dogs", offline)
    assert main(["evaluate", *TINY]) == 2
    assert "SKLEARN_CONVFEAT_DATA" in capsys.readouterr().err


def test_extract_with_another_backbone(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", {"x": 2}, size=(32, 32)) / "x"
    out = tmp_path / "features.npy"
    expected = ConvFeatureExtractor(
        backbone="resnet50", weights=None, image_size=32, layer=3, pooling="avg",
        random_state=0,
    ).fit_transform(image_paths(folder))
    argv = ["extract", str(folder), "-o", str(out), *TINY, "--backbone", "ResNet50",
            "--layer", "3", "--pooling", "avg", "--quiet"]
    assert main(argv) == 0
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    assert "(conv3_block4_out, avg)" in capsys.readouterr().out


def test_extract_with_test_time_augmentation(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", {"x": 2}, size=(32, 32)) / "x"
    out = tmp_path / "features.npy"
    params = dict(weights=None, image_size=32, layer=3, pooling="avg", random_state=0)
    expected = ConvFeatureExtractor(**params, tta="flip").fit_transform(image_paths(folder))
    plain = ConvFeatureExtractor(**params).fit_transform(image_paths(folder))
    assert not np.allclose(expected, plain, rtol=1e-3)
    argv = ["extract", str(folder), "-o", str(out), *TINY, "--layer", "3",
            "--pooling", "avg", "--tta", "flip", "--quiet"]
    assert main(argv) == 0
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    assert "(block3_pool, avg, tta=flip)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv[:-3], "--tta", "flips"])
    assert "argument --tta: invalid choice: 'flips'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello", "is not a Keras archive: it is not a zip file"),
        ("zip:notes.txt", "is a zip file but not a Keras archive: it holds no config.json"),
        ("zip:config.json", "is a damaged or unsupported Keras archive (JSONDecodeError"),
    ],
)
def test_cam_says_what_is_wrong_with_a_keras_file(tmp_path, capsys, content, message):
    import zipfile

    model = tmp_path / "bad.keras"
    if isinstance(content, bytes):
        model.write_bytes(content)
    else:
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr(content.split(":")[1], "{")
    image = tmp_path / "picture.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["cam", str(image), "--model", str(model), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convfeat cam: error: --model '{model}' {message}")
    assert "File not found" not in err and "model.save('model.keras')" in err
    assert err.count("\n") == 1


def test_cam_names_the_lambda_layer_of_a_keras_file(tmp_path, capsys):
    import keras

    inputs = keras.Input((32, 32, 3))
    doubled = keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)
    model = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(doubled)).save(model)
    image = tmp_path / "picture.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["cam", str(image), "--model", str(model), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"convfeat cam: error: --model '{model}' cannot be rebuilt: its `Lambda` layer "
        "'double' wraps a Python lambda"
    )
    assert "enable_unsafe_deserialization" in err and "safe_mode=False" not in err


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_save_must_be_a_skops_file_name(layouts, monkeypatch, capsys, command):
    monkeypatch.chdir(layouts)
    assert main([command, "mixed", *TINY, "--save", "ft.txt"]) == 2
    assert capsys.readouterr().err == (
        f"convfeat {command}: error: --save 'ft.txt' must end in .skops: the extension "
        "chooses the format.\n"
    )
    assert not (layouts / "ft.txt").exists()


def test_image_size_native_is_the_networks_own_size(tmp_path, capsys):
    images = make_image_folder(tmp_path / "images", {"x": 2}, size=(32, 32)) / "x"
    out = tmp_path / "f.npy"
    args = ["extract", str(images), "-o", str(out), "--weights", "random", "--quiet"]
    assert main([*args, "--image-size", "native", "--layer", "5"]) == 0
    assert np.load(out).shape == (2, 7 * 7 * 512)  # VGG16 at 224x224
    assert main([*args, "--image-size", "NATIVE", "--pooling", "avg"]) == 0
    assert np.load(out).shape == (2, 512)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([*args, "--image-size", "big"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        "convfeat extract: error: argument --image-size: must be a whole number of "
        "pixels or 'native'; got 'big'. E.g. --image-size 150, or --image-size native "
        "for the network's own size. (see 'convfeat extract --help')\n"
    )


@pytest.mark.parametrize("command", ["extract", "evaluate", "finetune"])
def test_help_offers_the_native_image_size(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--image-size N|native" in help_text and "'native': the network's own" in help_text
