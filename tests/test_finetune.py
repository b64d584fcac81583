import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_convfeat import FineTuner, load_image_folder
from sklearn_convfeat._keras_layers import AUGMENT_DEFAULTS


def tiny(**params):
    """An offline FineTuner on 32×32 images, two short phases."""
    defaults = dict(
        weights=None, image_size=32, head_epochs=2, fine_tune_epochs=1, batch_size=4,
        head_learning_rate=1e-3, fine_tune_learning_rate=1e-4, random_state=0,
        augment=False,  # the cache's mechanics; cached augmentation: test_finetune_training
    )
    return FineTuner(**{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    """Dark images are "night", bright ones "day"."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    X[::2] //= 4
    y = np.array(["night", "day"] * 6)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    return tiny().fit(*data)


def _block_weights(model, block):
    base = model.get_layer("vgg16")
    return [w.copy() for layer in base.layers if layer.name.startswith(f"block{block}_")
            for w in layer.get_weights()]


def test_fitted_attributes_and_outputs(fitted, data):
    X, y = data
    assert fitted.classes_.tolist() == ["day", "night"]
    assert fitted.history_["phase"] == [1, 1, 2]
    assert fitted.fine_tune_start_ == 2
    assert len(fitted.history_["epoch_seconds"]) == 3
    assert fitted.cache_ == "memory"
    proba = fitted.predict_proba(X)
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(fitted.predict(X)) <= {"day", "night"}
    scores = fitted.decision_function(X)
    assert scores.shape == (12,)
    np.testing.assert_array_equal(scores > 0, fitted.predict(X) == "night")
    assert 0.0 <= fitted.score(X, y) <= 1.0


def test_full_network_layout(fitted):
    names = [layer.name for layer in fitted.model_.layers]
    assert names[1:] == ["preprocessing", "vgg16", "flatten", "hidden", "dropout", "output"]


@pytest.mark.parametrize("unfreeze", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("cache", ["auto", None])
def test_phase2_changes_exactly_the_unfrozen_blocks(data, unfreeze, cache):
    tuner = tiny(unfreeze=unfreeze, cache=cache, fine_tune_epochs=0)
    tuner.fit(*data)
    after_phase1 = {block: _block_weights(tuner.model_, block) for block in range(1, 6)}
    tuner.set_params(fine_tune_epochs=2, fine_tune_learning_rate=1e-2)
    tuner.fit(*data)  # same seed: same phase 1, then phase 2
    for block in range(1, 6):
        now = _block_weights(tuner.model_, block)
        changed = any(not np.array_equal(a, b) for a, b in zip(now, after_phase1[block]))
        assert changed == (block > 5 - unfreeze), block


def test_phase1_leaves_the_whole_base_bit_identical(data):
    from sklearn_convfeat._weights import content_sha256

    tuner = tiny(fine_tune_epochs=0).fit(*data)
    assert content_sha256(tuner.model_.get_layer("vgg16")) == tuner.weights_sha256_


@pytest.mark.parametrize("unfreeze", [
    0, pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
])
def test_cache_and_end_to_end_give_the_same_model(data, unfreeze):
    cached = tiny(unfreeze=unfreeze, cache="auto").fit(*data)
    end_to_end = tiny(unfreeze=unfreeze, cache=None).fit(*data)
    assert cached.cache_ == "memory" and end_to_end.cache_ is None
    np.testing.assert_allclose(
        cached.predict_proba(data[0]), end_to_end.predict_proba(data[0]), atol=1e-5
    )
    np.testing.assert_allclose(cached.history_["loss"], end_to_end.history_["loss"], rtol=1e-4)


@pytest.mark.slow
def test_disk_cache_gives_the_same_model(data):
    on_disk = tiny(cache="disk").fit(*data)
    in_memory = tiny(cache="memory").fit(*data)
    assert on_disk.cache_ == "disk"
    np.testing.assert_allclose(
        on_disk.predict_proba(data[0]), in_memory.predict_proba(data[0]), atol=1e-6
    )


def test_same_seed_same_predictions_other_seed_other(data, fitted):
    again = tiny().fit(*data)
    np.testing.assert_array_equal(again.predict_proba(data[0]), fitted.predict_proba(data[0]))
    other = tiny(random_state=1).fit(*data)
    assert not np.allclose(other.predict_proba(data[0]), fitted.predict_proba(data[0]))


def test_unfreeze_zero_skips_phase_two(data):
    tuner = tiny(unfreeze=0).fit(*data)
    assert tuner.history_["phase"] == [1, 1]
    assert tuner.fine_tune_start_ == 2


def test_augmentation_trains_end_to_end_and_is_off_at_prediction(data):
    tuner = tiny(augment={"rotation_range": 20}, fine_tune_epochs=0).fit(*data)
    assert tuner.cache_ is None
    assert "augmentation" in [layer.name for layer in tuner.model_.layers]
    first = tuner.predict_proba(data[0])
    np.testing.assert_array_equal(tuner.predict_proba(data[0]), first)


def test_the_books_augmentation_settings():
    tuner = tiny(augment=True)
    from sklearn_convfeat._keras_layers import augmentation_layers, check_augment

    settings = check_augment(tuner.augment)
    assert settings == AUGMENT_DEFAULTS
    layers = [type(layer).__name__ for layer in augmentation_layers(settings, 0).layers]
    assert layers == ["RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom", "RandomFlip"]


def test_validation_data_and_early_stopping(data):
    X, y = data
    tuner = tiny(early_stopping=True, n_iter_no_change=1, head_epochs=6, head_learning_rate=0.5)
    tuner.fit(X, y, validation_data=(X[:4], y[:4]))
    assert "val_loss" in tuner.history_ and "val_accuracy" in tuner.history_
    assert tuner.fine_tune_start_ < 6  # a huge learning rate stops improving quickly


def test_early_stopping_holds_out_a_fraction(data):
    tuner = tiny(early_stopping=True, validation_fraction=0.34).fit(*data)
    assert len(tuner.history_["val_loss"]) == 3


def test_multiclass_string_labels_and_class_weight(data):
    X, _ = data
    y = np.array(["a", "b", "c"] * 4)
    tuner = tiny(class_weight={"a": 2.0}).fit(X, y)
    assert tuner.predict_proba(X).shape == (12, 3)
    assert tuner.decision_function(X).shape == (12, 3)
    assert set(tuner.predict(X)) <= {"a", "b", "c"}


def test_file_paths_train_like_arrays(image_folder):
    paths, y, _ = load_image_folder(image_folder)
    tuner = tiny().fit(paths, y)
    assert tuner.predict(paths).shape == (len(paths),)


@pytest.mark.parametrize("dump_load", ["pickle", "joblib"])
def test_round_trip_gives_identical_predictions(tmp_path, data, fitted, dump_load):
    if dump_load == "pickle":
        restored = pickle.loads(pickle.dumps(fitted))
    else:
        joblib.dump(fitted, tmp_path / "tuner.joblib")
        restored = joblib.load(tmp_path / "tuner.joblib")
    np.testing.assert_array_equal(restored.predict_proba(data[0]), fitted.predict_proba(data[0]))
    assert restored.history_ == fitted.history_


def test_clone_is_an_unfitted_twin(data, fitted):
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        twin.predict(data[0])


@pytest.mark.slow
def test_grid_search_over_unfreeze(data):
    search = GridSearchCV(tiny(), {"unfreeze": [0, 1, 2]}, cv=2).fit(*data)
    assert [p["unfreeze"] for p in search.cv_results_["params"]] == [0, 1, 2]
    assert search.best_estimator_.predict(data[0]).shape == (12,)


def test_inside_a_pipeline(data):
    pipe = Pipeline([("identity", FunctionTransformer()), ("tuner", tiny())]).fit(*data)
    assert pipe.predict(data[0]).shape == (12,)


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"unfreeze": 6}, "'unfreeze' parameter of FineTuner must be an int in the range \\[0, 5\\] or a str among {'auto'}. Got 6"),
        ({"unfreeze": "deep"}, "'unfreeze' parameter of FineTuner .* among {'auto'}. Got 'deep'"),
        ({"unfreeze": -1}, "'unfreeze' parameter .* range \\[0, 5\\] or .*Got -1"),
        ({"unfreeze": 1.5}, "'unfreeze' parameter .* Got 1.5"),
        ({"unfreeze": True}, "'unfreeze' parameter of FineTuner must be an int .* Got True"),
        ({"augment": {"rotation": 10, "flip": True}}, "`augment` has unknown keys \\['flip', 'rotation'\\]. Valid keys are \\['fill_mode', 'height_shift_range'"),
        ({"augment": {"fill_mode": "mirror"}}, "`augment\\['fill_mode'\\]` must be one of"),
        ({"augment": {"zoom_range": -1}}, "`augment\\['zoom_range'\\]` must be a number >= 0"),
        ({"augment": "yes"}, "'augment' parameter of FineTuner must be .*'dihedral'.*Got 'yes'"),
        ({"cache": "ram"}, "'cache' parameter .* Got 'ram'"),
        ({"pooling": "max"}, "'pooling' parameter of FineTuner must be a str among .*'avg'.*Got 'max'"),
        ({"fine_tune_learning_rate": "fast"}, "'fine_tune_learning_rate' parameter .* or a str among {'auto'}. Got 'fast'"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"image_size": 16}, "`image_size` must be at least \\(32, 32\\)"),
        ({"optimizer": "lbfgs"}, "'optimizer' parameter"),
        ({"class_weight": {"dusk": 2.0}}, "class_weight has keys \\['dusk'\\]"),
    ],
)
def test_bad_parameters(data, params, match):
    with pytest.raises(ValueError, match=match):
        tiny(**params).fit(*data)


def test_a_single_class_is_rejected(data):
    with pytest.raises(ValueError, match="at least 2 classes; y contains only one class: 'day'"):
        tiny().fit(data[0], ["day"] * 12)


def test_validation_fraction_leaving_an_empty_split(data):
    X, y = data
    with pytest.raises(ValueError, match="validation_fraction=0.05 of the 12 training samples"):
        tiny(early_stopping=True, validation_fraction=0.05).fit(X, y)
    with pytest.raises(ValueError, match="validation_fraction=0.95 of the 12 training samples"):
        tiny(early_stopping=True, validation_fraction=0.95).fit(X, y)


def test_bad_images_and_lengths(data):
    X, y = data
    with pytest.raises(ValueError, match="with 2 channels"):
        tiny().fit(np.zeros((4, 32, 32, 2)), y[:4])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        tiny().fit(X, y[:5])
    with pytest.raises(ValueError, match="Unknown label type"):
        tiny().fit(X, np.linspace(0, 1, 12))
    with pytest.raises(FileNotFoundError, match="do not exist"):
        tiny().fit(["/nope/a.png", "/nope/b.png"], [0, 1])


def test_validation_labels_must_be_known_classes(data):
    X, y = data
    with pytest.raises(ValueError, match="validation_data has labels \\['dusk'\\]"):
        tiny().fit(X, y, validation_data=(X[:2], ["dusk", "day"]))


def _folder_of(tmp_path, X, y):
    """Write images as PNG files; returns their paths."""
    from PIL import Image

    paths = []
    for index, (image, label) in enumerate(zip(X, y)):
        path = tmp_path / f"{label}.{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def _no_training(monkeypatch):
    """Make any training step fail loudly: the checks must come before it."""
    from sklearn_convfeat import _finetune_phases

    def must_not_train(*args, **kwargs):
        raise AssertionError("training started before the inputs were checked")

    monkeypatch.setattr(_finetune_phases, "compile_for_training", must_not_train)


def test_validation_files_are_checked_before_any_training(tmp_path, data, monkeypatch):
    X, y = data
    paths = _folder_of(tmp_path, X, y)
    _no_training(monkeypatch)
    missing = paths[:4] + [str(tmp_path / "gone.png")]
    with pytest.raises(FileNotFoundError, match="gone.png"):
        tiny().fit(paths, y, validation_data=(missing, y[:5]))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(open(paths[0], "rb").read()[:60])  # header, then nothing
    with pytest.raises(ValueError, match=r"corrupt\.png.*validation_data\[4\]") as error:
        tiny().fit(paths, y, validation_data=(paths[:4] + [str(corrupt)], y[:5]))
    assert "on_error" not in str(error.value)  # FineTuner has no such parameter
    with pytest.raises(ValueError, match=r"corrupt\.png.*X\[2\]"):
        tiny().fit(paths[:2] + [str(corrupt)] + paths[3:], y)


def test_validation_data_must_be_a_pair(data):
    X, y = data
    with pytest.raises(ValueError, match=r"must be a pair \(X_val, y_val\).*tuple of 3"):
        tiny().fit(X, y, validation_data=(X, y, y))
    with pytest.raises(ValueError, match="must be a pair"):
        tiny().fit(X, y, validation_data=X)


def test_temporary_cache_files_are_removed_when_fit_fails(tmp_path, data, monkeypatch):
    import tempfile

    from sklearn_convfeat import _finetune_phases

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(_finetune_phases, "compile_for_training", fails)
    with pytest.raises(RuntimeError, match="out of memory") as failure:
        tiny(cache="disk").fit(*data)
    assert failure.traceback  # held, as a debugger or a log handler would hold it
    # (TensorFlow's autograph writes its own generated files there too.)
    assert list(tmp_path.glob("sklearn_convfeat_cache_*")) == []
