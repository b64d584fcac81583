"""Every target type: multi-label KerasMLPClassifier and FineTuner, and the regressors
KerasMLPRegressor and FineTunerRegressor."""

import inspect
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.metrics import r2_score

from sklearn_convfeat import (
    FineTuner,
    FineTunerRegressor,
    KerasMLPClassifier,
    KerasMLPRegressor,
    load,
    save,
)

FAST = dict(hidden_units=16, optimizer="adam", learning_rate=1e-2, epochs=10,
            batch_size=32, random_state=0)
TINY = dict(weights=None, image_size=32, head_epochs=2, fine_tune_epochs=1, batch_size=4,
            head_learning_rate=1e-3, fine_tune_learning_rate=1e-4, random_state=0)


def fast_mlp(cls=KerasMLPClassifier, **params):
    return cls(**{**FAST, **params})


def tiny(cls=FineTuner, **params):
    return cls(**{**TINY, **params})


@pytest.fixture(scope="module")
def multilabel_data():
    """Label k is on when feature k is positive."""
    X = np.random.default_rng(0).normal(size=(200, 4))
    return X, (X[:, :3] > 0).astype(int)


@pytest.fixture(scope="module")
def multilabel_mlp(multilabel_data):
    return fast_mlp(epochs=20).fit(*multilabel_data)


@pytest.fixture(scope="module")
def regression_data():
    X = np.random.default_rng(1).normal(size=(200, 3))
    return X, 3 * X[:, 0] - 2 * X[:, 1] + 100


@pytest.fixture(scope="module")
def images():
    """Twelve 32×32 images of uniform random brightness, with a little noise."""
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0, 255, size=12)
    noise = rng.normal(0, 4, size=(12, 32, 32, 3))
    X = np.clip(brightness[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return X, brightness


@pytest.fixture(scope="module")
def fitted_regressor(images):
    return tiny(FineTunerRegressor).fit(*images)


# --- multi-label classification ------------------------------------------------------


def test_multilabel_mlp_learns_each_label(multilabel_mlp, multilabel_data):
    X, Y = multilabel_data
    np.testing.assert_array_equal(multilabel_mlp.classes_, [0, 1, 2])
    proba = multilabel_mlp.predict_proba(X)
    assert proba.shape == (200, 3)
    assert proba.dtype == np.float64 and proba.min() >= 0 and proba.max() <= 1
    # Independent labels: the rows do not sum to one.
    assert not np.allclose(proba.sum(axis=1), 1.0)
    predicted = multilabel_mlp.predict(X)
    assert predicted.shape == (200, 3) and predicted.dtype == Y.dtype
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    assert (predicted == Y).mean(axis=0).min() > 0.9
    output = multilabel_mlp.model_.get_layer("output")
    assert output.units == 3 and output.get_config()["activation"] == "sigmoid"
    assert multilabel_mlp.model_.loss == "binary_crossentropy"
    assert multilabel_mlp.score(X, Y) > 0.7  # subset accuracy: all three labels right


def test_multilabel_tag():
    assert KerasMLPClassifier().__sklearn_tags__().classifier_tags.multi_label
    assert FineTuner().__sklearn_tags__().classifier_tags.multi_label


def test_multilabel_early_stopping_holds_out_a_shuffled_split(multilabel_data):
    X, Y = multilabel_data
    # A label only the first sample has: no split stratified by the rows' label
    # combinations could be drawn.
    Y = np.column_stack([Y, np.eye(len(X), 1, dtype=int)])
    clf = fast_mlp(early_stopping=True, validation_fraction=0.2, epochs=3).fit(X, Y)
    assert len(clf.history_["val_loss"]) == 3


def test_multilabel_class_weight_is_refused(multilabel_data):
    with pytest.raises(ValueError, match="class_weight='balanced' is not supported with "
                       "multi-label y"):
        fast_mlp(class_weight="balanced").fit(*multilabel_data)


@pytest.mark.parametrize("estimator", [KerasMLPClassifier(), tiny()], ids=["mlp", "tuner"])
def test_multiclass_multioutput_is_refused(estimator, images):
    X = np.zeros((12, 4)) if isinstance(estimator, KerasMLPClassifier) else images[0]
    y = np.tile([[0, 1], [2, 0], [1, 2]], (4, 1))
    with pytest.raises(ValueError, match="supports binary or multi-class labels .* "
                       "multi-label .* Got y of type 'multiclass-multioutput'"):
        estimator.fit(X, y)


def test_continuous_multioutput_is_not_a_classification_target(multilabel_data):
    X, _ = multilabel_data
    with pytest.raises(ValueError, match="Unknown label type"):
        fast_mlp().fit(X, np.random.default_rng(0).normal(size=(200, 2)))


def test_a_column_vector_of_labels_is_raveled(multilabel_data):
    X, Y = multilabel_data
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        clf = fast_mlp(epochs=2).fit(X, Y[:, :1])
    assert clf.predict(X).shape == (200,)
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_multilabel_mlp_pickle_and_clone(multilabel_mlp, multilabel_data):
    X, _ = multilabel_data
    restored = pickle.loads(pickle.dumps(multilabel_mlp))
    np.testing.assert_array_equal(restored.predict_proba(X), multilabel_mlp.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), multilabel_mlp.predict(X))
    twin = clone(multilabel_mlp)
    assert twin.get_params() == multilabel_mlp.get_params()
    with pytest.raises(NotFittedError):
        twin.predict(X)


@pytest.fixture(scope="module")
def multilabel_tuner(images):
    X, brightness = images
    # "bright" and "mid-bright" overlap: both, either or neither may be on.
    Y = np.column_stack([brightness > 128, (brightness > 64) & (brightness < 192)])
    return tiny().fit(X, Y.astype(int)), X, Y.astype(int)


def test_multilabel_finetuner(multilabel_tuner):
    tuner, X, Y = multilabel_tuner
    np.testing.assert_array_equal(tuner.classes_, [0, 1])
    proba = tuner.predict_proba(X)
    assert proba.shape == (12, 2) and proba.min() >= 0 and proba.max() <= 1
    predicted = tuner.predict(X)
    assert predicted.shape == (12, 2)
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    scores = tuner.decision_function(X)
    assert scores.shape == (12, 2)
    np.testing.assert_array_equal(scores > 0, proba > 0.5)
    np.testing.assert_allclose(scores, np.log(proba / (1 - proba)), rtol=1e-5)
    assert tuner.model_.get_layer("output").get_config()["activation"] == "sigmoid"
    assert tuner.history_["phase"] == [1, 1, 2] and tuner.cache_ == "memory"
    restored = pickle.loads(pickle.dumps(tuner))
    np.testing.assert_array_equal(restored.predict_proba(X), proba)


def test_multilabel_finetuner_validation_and_early_stopping(multilabel_tuner):
    _, X, Y = multilabel_tuner
    tuner = tiny(early_stopping=True, validation_fraction=0.25).fit(X, Y)
    assert len(tuner.history_["val_loss"]) == 3
    tuner = tiny().fit(X[:8], Y[:8], validation_data=(X[8:], Y[8:]))
    assert len(tuner.history_["val_loss"]) == 3
    with pytest.raises(ValueError, match="validation_data must be a 0/1 indicator "
                       "matrix with 2 columns"):
        tiny().fit(X, Y, validation_data=(X[:2], [0, 1]))


def test_multilabel_finetuner_refuses_class_weight(multilabel_tuner):
    _, X, Y = multilabel_tuner
    with pytest.raises(ValueError, match="class_weight=.* is not supported with multi-label"):
        tiny(class_weight={0: 2.0}).fit(X, Y)


# --- regression ----------------------------------------------------------------------


def test_mlp_regressor_learns_a_linear_relation(regression_data):
    X, y = regression_data
    reg = fast_mlp(KerasMLPRegressor, dropout=0.0, epochs=30).fit(X[:150], y[:150])
    predicted = reg.predict(X[150:])
    assert predicted.shape == (50,) and predicted.dtype == np.float64
    assert r2_score(y[150:], predicted) > 0.9
    assert reg.score(X[150:], y[150:]) == pytest.approx(r2_score(y[150:], predicted))
    assert reg.y_mean_ == pytest.approx(y[:150].mean())
    assert reg.y_scale_ == pytest.approx(y[:150].std())
    assert set(reg.history_) == {"loss"}
    assert reg.history_["loss"][-1] < 0.1  # standardized MSE: 1.0 is the mean's
    output = reg.model_.get_layer("output")
    assert output.units == 1 and output.get_config()["activation"] == "linear"
    assert not hasattr(reg, "predict_proba") and not hasattr(reg, "classes_")


def test_mlp_regressor_predictions_follow_the_units_of_y(regression_data):
    """Standardizing y makes training independent of its scale and offset."""
    X, y = regression_data
    reg = fast_mlp(KerasMLPRegressor, epochs=3)
    small = clone(reg).fit(X, y).predict(X)
    large = clone(reg).fit(X, 1000 * y - 5e4).predict(X)
    np.testing.assert_allclose(large, 1000 * small - 5e4, rtol=1e-4)


def test_mlp_regressor_shapes_of_y(regression_data):
    X, y = regression_data
    two = np.column_stack([y, -y / 10])
    reg = fast_mlp(KerasMLPRegressor, epochs=2).fit(X, two)
    assert reg.predict(X).shape == (200, 2)
    assert reg.y_mean_.shape == reg.y_scale_.shape == (2,)
    assert reg.model_.get_layer("output").units == 2
    one_column = reg.fit(X, y[:, None]).predict(X)
    assert one_column.shape == (200, 1)
    np.testing.assert_allclose(one_column[:, 0], reg.fit(X, y).predict(X))


def test_mlp_regressor_constant_target(regression_data):
    X, _ = regression_data
    reg = fast_mlp(KerasMLPRegressor, epochs=5).fit(X, np.full(200, 7.0))
    assert reg.y_scale_ == 1.0
    np.testing.assert_allclose(reg.predict(X), 7.0, atol=0.5)


def test_mlp_regressor_early_stopping(regression_data):
    reg = fast_mlp(KerasMLPRegressor, early_stopping=True, epochs=4).fit(*regression_data)
    assert len(reg.history_["val_loss"]) == reg.n_iter_ <= 4
    assert 1 <= reg.best_epoch_ <= reg.n_iter_


def test_mlp_regressor_pickle_clone_and_save(regression_data, tmp_path):
    X, y = regression_data
    reg = fast_mlp(KerasMLPRegressor, epochs=2).fit(X, y)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(restored.predict(X), reg.predict(X))
    twin = clone(reg)
    assert twin.get_params() == reg.get_params()
    with pytest.raises(NotFittedError):
        twin.predict(X)
    save(reg, tmp_path / "reg.skops")
    np.testing.assert_array_equal(load(tmp_path / "reg.skops").predict(X), reg.predict(X))


@pytest.mark.parametrize("y", [["a", "b"] * 100, np.array([["1.0", "x"]] * 200)])
def test_regression_y_must_be_numeric(regression_data, y):
    X, _ = regression_data
    with pytest.raises(ValueError, match="KerasMLPRegressor needs numeric targets: y has "
                       "non-numeric values such as"):
        KerasMLPRegressor().fit(X, y)


def test_regression_y_must_be_finite(regression_data):
    X, y = regression_data
    with pytest.raises(ValueError, match="Input y contains NaN"):
        KerasMLPRegressor().fit(X, np.where(y > 100, np.nan, y))


@pytest.mark.parametrize(
    "regressor, classifier",
    [(KerasMLPRegressor, KerasMLPClassifier), (FineTunerRegressor, FineTuner)],
)
def test_regressors_take_the_parameters_of_the_classifiers_but_class_labels(
    regressor, classifier
):
    def parameters(cls):
        return {
            name: parameter.default
            for name, parameter in inspect.signature(cls).parameters.items()
        }

    expected = parameters(classifier)
    del expected["class_weight"]
    expected.pop("label_smoothing", None)  # FineTuner's: no labels to smooth
    assert parameters(regressor) == expected
    assert set(regressor._parameter_constraints) == set(expected)


def test_finetuner_regressor_cached(fitted_regressor, images):
    X, brightness = images
    reg = fitted_regressor
    predicted = reg.predict(X)
    assert predicted.shape == (12,) and predicted.dtype == np.float64
    assert reg.cache_ == "memory"
    assert reg.history_["phase"] == [1, 1, 2] and reg.fine_tune_start_ == 2
    assert "accuracy" not in reg.history_
    assert reg.y_mean_ == pytest.approx(brightness.mean())
    names = [layer.name for layer in reg.model_.layers]
    assert names[-4:] == ["flatten", "hidden", "dropout", "output"]
    assert reg.model_.get_layer("output").get_config()["activation"] == "linear"


def test_finetuner_regressor_learns_brightness(images):
    X, brightness = images
    reg = tiny(FineTunerRegressor, head_epochs=30, fine_tune_epochs=0, dropout=0.0,
               head_learning_rate=1e-2, optimizer="adam").fit(X, brightness)
    assert reg.score(X, brightness) > 0.5


@pytest.mark.parametrize("unfreeze", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_finetuner_regressor_cache_and_end_to_end_agree(images, unfreeze):
    X, brightness = images
    # without augmentation, which differs by design between the two
    cached = tiny(FineTunerRegressor, unfreeze=unfreeze, augment=False).fit(X, brightness)
    end_to_end = tiny(FineTunerRegressor, unfreeze=unfreeze, augment=False,
                      cache=None).fit(X, brightness)
    assert cached.cache_ == "memory" and end_to_end.cache_ is None
    np.testing.assert_allclose(cached.predict(X), end_to_end.predict(X), rtol=1e-4)


def test_finetuner_regressor_two_targets_and_validation(images):
    X, brightness = images
    Y = np.column_stack([brightness, 255 - brightness])
    reg = tiny(FineTunerRegressor, early_stopping=True).fit(
        X[:9], Y[:9], validation_data=(X[9:], Y[9:])
    )
    assert reg.predict(X).shape == (12, 2)
    assert len(reg.history_["val_loss"]) == 3
    with pytest.raises(ValueError, match=r"validation_data must have the shape "
                       r"\(n_samples, 2\) of the y given to fit; got \(3,\)"):
        tiny(FineTunerRegressor).fit(X[:9], Y[:9], validation_data=(X[9:], brightness[9:]))
    held_out = tiny(FineTunerRegressor, early_stopping=True, validation_fraction=0.25)
    assert len(held_out.fit(X, brightness).history_["val_loss"]) == 3


def test_finetuner_regressor_pickle_and_clone(fitted_regressor, images):
    X, _ = images
    restored = pickle.loads(pickle.dumps(fitted_regressor))
    np.testing.assert_array_equal(restored.predict(X), fitted_regressor.predict(X))
    assert restored.history_ == fitted_regressor.history_
    twin = clone(fitted_regressor)
    assert twin.get_params() == fitted_regressor.get_params()
    with pytest.raises(NotFittedError):
        twin.predict(X)


def test_finetuner_regressor_errors(images):
    X, _ = images
    with pytest.raises(ValueError, match="FineTunerRegressor needs numeric targets"):
        tiny(FineTunerRegressor).fit(X, ["dark", "bright"] * 6)
    with pytest.raises(ValueError, match="'class_weight'"):
        tiny(FineTunerRegressor).set_params(class_weight="balanced")
    with pytest.raises(ValueError, match="'unfreeze' parameter of FineTunerRegressor"):
        tiny(FineTunerRegressor, unfreeze=True).fit(X, np.arange(12.0))
