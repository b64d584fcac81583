"""save() / load(): skops files round-trip every estimator; nothing else runs code."""

import json
import os
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skops.io.exceptions import UntrustedTypesFoundException

from sklearn_convfeat import (
    ConvFeatureExtractor,
    FineTuner,
    KerasMLPClassifier,
    load,
    save,
)

Y = [0, 1, 0, 1, 0, 1]


def extractor(**params):
    return ConvFeatureExtractor(weights=None, image_size=32, random_state=0, **params)


def round_trip(model, tmp_path, **load_params):
    path = tmp_path / "model.skops"
    save(model, path)
    return load(path, **load_params)


def test_an_extractor_gives_identical_features_after_loading(images, tmp_path):
    fitted = extractor().fit(images)
    loaded = round_trip(fitted, tmp_path)
    assert type(loaded) is ConvFeatureExtractor and loaded is not fitted
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    assert loaded.weights_sha256_ == fitted.weights_sha256_


def test_a_pipeline_with_logistic_regression_predicts_identically(images, tmp_path):
    pipe = Pipeline([("feat", extractor()), ("clf", LogisticRegression())]).fit(images, Y)
    loaded = round_trip(pipe, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(images), pipe.predict_proba(images))


def test_a_pipeline_with_the_keras_head_predicts_identically(images, tmp_path):
    pipe = Pipeline([
        ("feat", extractor(pooling="avg")),
        ("scale", StandardScaler()),
        ("clf", KerasMLPClassifier(hidden_units=8, epochs=2, random_state=0)),
    ]).fit(images, Y)
    loaded = round_trip(pipe, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(images), pipe.predict_proba(images))
    # The network travelled as .keras bytes and is a live model again.
    assert loaded[-1].model_ is not pipe[-1].model_
    assert loaded[-1].model_.count_params() == pipe[-1].model_.count_params()


def test_a_fine_tuner_predicts_identically(images, tmp_path):
    tuner = FineTuner(
        weights=None, image_size=32, head_epochs=1, fine_tune_epochs=1, random_state=0
    ).fit(images, Y)
    loaded = round_trip(tuner, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(images), tuner.predict_proba(images))


def test_an_int8_extractor_keeps_its_quantized_model(images, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    fitted = extractor(backend="openvino", quantize="int8", pooling="avg").fit(images)
    loaded = round_trip(fitted, tmp_path)
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))


def test_a_function_that_runs_commands_is_refused_by_default(images, tmp_path):
    pipe = Pipeline([("evil", FunctionTransformer(os.system)), ("clf", LogisticRegression())])
    path = tmp_path / "evil.skops"
    with pytest.warns(UserWarning, match="does not trust by default.*system"):
        save(pipe, path)
    with pytest.raises(UntrustedTypesFoundException,
                       match="not trusted: \\['(posix|nt).system'\\].*trusted=\\["):
        load(path)
    # Trusted explicitly, after inspection: it loads (and is never called here).
    trusted = load(path, trusted=[f"{os.name if os.name == 'nt' else 'posix'}.system"])
    assert trusted[0].func is os.system


def test_a_crafted_file_naming_another_class_is_refused(images, tmp_path):
    path = tmp_path / "model.skops"
    save(Pipeline([("feat", extractor()), ("clf", LogisticRegression())]).fit(images, Y),
         path)
    crafted = tmp_path / "crafted.skops"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "schema.json":
                schema = json.loads(data)
                text = json.dumps(schema).replace(
                    '"__module__": "sklearn.linear_model._logistic"',
                    '"__module__": "subprocess"',
                ).replace('"__class__": "LogisticRegression"', '"__class__": "Popen"')
                assert "subprocess" in text
                data = text.encode()
            target.writestr(item, data)
    with pytest.raises(UntrustedTypesFoundException, match="subprocess.Popen"):
        load(crafted)


def test_a_pickle_is_not_loaded_without_the_explicit_flag(images, tmp_path):
    fitted = extractor().fit(images)
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    with pytest.raises(
        ValueError,
        match=(
            "not a skops file.*pickle or joblib.*run arbitrary code.*"
            "allow_pickle=True.*--trust-pickle"
        ),
    ):
        load(path)
    with pytest.warns(UserWarning, match="runs any code"):
        loaded = load(path, allow_pickle=True)
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))


def test_a_zip_that_is_not_a_skops_file_is_named(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="zip archive but not a skops file"):
        load(path, allow_pickle=True)


def test_bad_arguments_are_named(images, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load(tmp_path / "missing.skops")
    with pytest.raises(InvalidParameterError, match="'trusted' parameter"):
        load(tmp_path / "missing.skops", trusted="posix.system")
    with pytest.raises(TypeError, match="list of type names"):
        load(tmp_path / "missing.skops", trusted=[os.system])
    with pytest.raises(InvalidParameterError, match="'model' parameter"):
        save("not a model", tmp_path / "x.skops")


def test_saving_replaces_the_file_whole(images, tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"old")
    save(extractor().fit(images), path)
    assert isinstance(load(path), ConvFeatureExtractor)
    assert sorted(os.listdir(tmp_path)) == ["model.skops"]  # no temporary file left


def test_saving_over_a_folder_names_the_path_and_leaves_nothing(tmp_path):
    folder = tmp_path / "model.skops"
    (folder / "inside").mkdir(parents=True)
    for target in (folder, str(folder)):
        with pytest.raises(
            IsADirectoryError,
            match=r"`path` must name a file to write; got '.*model\.skops', which is an "
            r"existing folder\. Give a file name, e\.g\. '.*model\.skops.model\.skops'",
        ):
            save(LogisticRegression(), target)
    assert os.listdir(tmp_path) == ["model.skops"]  # no temporary file beside it
    assert os.listdir(folder) == ["inside"]
