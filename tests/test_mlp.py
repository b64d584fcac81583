"""Tests of KerasMLPClassifier on small synthetic data."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_convfeat._keras_state import model_from_bytes, model_to_bytes
from sklearn_convfeat._mlp import KerasMLPClassifier

# Learns the toy problems below in a few epochs; the book's defaults are for
# 8192 VGG16 features.
FAST = {
    "hidden_units": 16,
    "optimizer": "adam",
    "learning_rate": 1e-2,
    "epochs": 10,
    "batch_size": 32,
    "random_state": 0,
}


def fast(**params):
    return KerasMLPClassifier(**{**FAST, **params})


@pytest.fixture(scope="module")
def binary_data():
    X, y = make_blobs(n_samples=120, centers=2, n_features=4, random_state=0)
    return X, np.array(["cat", "dog"])[y]


@pytest.fixture(scope="module")
def multiclass_data():
    X, y = make_blobs(n_samples=150, centers=3, n_features=4, random_state=1)
    return X, np.array(["bird", "cat", "dog"])[y]


@pytest.fixture(scope="module")
def binary_clf(binary_data):
    return fast().fit(*binary_data)


@pytest.fixture(scope="module")
def multiclass_clf(multiclass_data):
    return fast().fit(*multiclass_data)


def test_defaults_are_the_books_recipe():
    params = KerasMLPClassifier().get_params()
    assert params == {
        "hidden_units": 256,
        "dropout": 0.5,
        "optimizer": "rmsprop",
        "learning_rate": 2e-5,
        "epochs": 30,
        "batch_size": 20,
        "early_stopping": False,
        "validation_fraction": 0.1,
        "n_iter_no_change": 5,
        "class_weight": None,
        "random_state": None,
        "verbose": 0,
    }


def test_binary_string_labels(binary_clf, binary_data):
    X, y = binary_data
    assert list(binary_clf.classes_) == ["cat", "dog"]
    assert binary_clf.n_features_in_ == 4
    assert set(binary_clf.predict(X)) <= {"cat", "dog"}
    assert binary_clf.score(X, y) > 0.95

    proba = binary_clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # One sigmoid unit: the second column is its output, the first 1 - it.
    assert binary_clf.model_.output_shape == (None, 1)
    output = np.asarray(binary_clf.model_(X.astype(np.float32), training=False))
    # The same network, evaluated in float64 (row order cannot change it).
    np.testing.assert_allclose(proba[:, 1], output[:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(
        binary_clf.predict(X), binary_clf.classes_[proba.argmax(axis=1)]
    )


def test_multiclass(multiclass_clf, multiclass_data):
    X, y = multiclass_data
    assert list(multiclass_clf.classes_) == ["bird", "cat", "dog"]
    assert multiclass_clf.model_.output_shape == (None, 3)
    assert multiclass_clf.score(X, y) > 0.95

    proba = multiclass_clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(
        multiclass_clf.predict(X), multiclass_clf.classes_[proba.argmax(axis=1)]
    )


def test_architecture_is_the_books_head(binary_clf):
    hidden, dropout, output = binary_clf.model_.layers
    assert (hidden.units, hidden.activation.__name__) == (16, "relu")
    assert dropout.rate == 0.5
    assert (output.units, output.activation.__name__) == (1, "sigmoid")


@pytest.mark.parametrize("labels", [[False, True], [-1, 1], [0.0, 1.0]])
def test_other_label_types(binary_data, labels):
    X, y = binary_data
    y = np.where(y == "cat", labels[0], labels[1])
    clf = fast(epochs=2).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, labels)
    assert clf.predict(X).dtype == y.dtype


def test_history_and_epochs(binary_clf):
    assert set(binary_clf.history_) == {"loss", "accuracy"}
    assert all(len(values) == 10 for values in binary_clf.history_.values())
    assert binary_clf.n_iter_ == binary_clf.best_epoch_ == 10
    # The toy problem is learnable: the training loss falls.
    assert binary_clf.history_["loss"][-1] < binary_clf.history_["loss"][0]


def test_pipeline_with_scaler(binary_data):
    X, y = binary_data
    pipe = make_pipeline(StandardScaler(), fast()).fit(X * 100 + 7, y)
    assert pipe.score(X * 100 + 7, y) > 0.95
    assert pipe.predict_proba(X[:5] * 100 + 7).shape == (5, 2)


def test_dataframe_feature_names(binary_data):
    pd = pytest.importorskip("pandas")
    X, y = binary_data
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = fast(epochs=1).fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c", "d"])
    assert clf.predict(frame).shape == (len(X),)


@pytest.fixture(scope="module")
def imbalanced_data():
    X, y = make_classification(
        n_samples=200,
        n_features=5,
        n_informative=2,
        weights=[0.9],
        class_sep=0.5,
        flip_y=0,
        random_state=0,
    )
    return X, np.where(y == 1, "rare", "common")


@pytest.mark.parametrize("class_weight", ["balanced", {"rare": 10}])
def test_class_weight_raises_minority_recall(imbalanced_data, class_weight):
    X, y = imbalanced_data
    unweighted = fast().fit(X, y)
    weighted = fast(class_weight=class_weight).fit(X, y)
    recall = recall_score(y, unweighted.predict(X), pos_label="rare")
    weighted_recall = recall_score(y, weighted.predict(X), pos_label="rare")
    assert weighted_recall > recall + 0.3


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_epoch():
    # Random labels: the hold-out loss cannot improve for long.
    rng = np.random.RandomState(0)
    X, y = rng.randn(120, 10), rng.randint(2, size=120)
    clf = fast(
        hidden_units=64,
        epochs=50,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=3,
    ).fit(X, y)

    assert set(clf.history_) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert clf.n_iter_ < 50
    assert clf.n_iter_ == clf.best_epoch_ + 3
    assert len(clf.history_["val_loss"]) == clf.n_iter_
    val_loss = clf.history_["val_loss"]
    assert val_loss[clf.best_epoch_ - 1] == min(val_loss)

    # Same seed, same split and order: training just up to the best epoch gives
    # the weights early stopping restored.
    shorter = clone(clf).set_params(epochs=clf.best_epoch_).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), shorter.predict_proba(X))


def test_same_random_state_gives_identical_predictions(binary_data):
    X, y = binary_data
    first = fast(random_state=3).fit(X, y).predict_proba(X)
    second = fast(random_state=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    other = fast(random_state=4).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other)


def test_random_state_instance_and_no_global_seeding(binary_data):
    X, y = binary_data
    np.random.seed(12)
    expected = np.random.rand()
    np.random.seed(12)
    first = fast(random_state=np.random.RandomState(5)).fit(X, y).predict_proba(X)
    # Fitting with a seeded random_state draws nothing from NumPy's global RNG.
    assert np.random.rand() == expected
    second = fast(random_state=np.random.RandomState(5)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)


def test_refit_is_reproducible(binary_data):
    X, y = binary_data
    clf = fast(epochs=3)
    first = clf.fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, clf.fit(X, y).predict_proba(X))


def test_pickle_round_trip(multiclass_clf, multiclass_data):
    X, _ = multiclass_data
    restored = pickle.loads(pickle.dumps(multiclass_clf))
    np.testing.assert_array_equal(
        restored.predict_proba(X), multiclass_clf.predict_proba(X)
    )
    np.testing.assert_array_equal(restored.classes_, multiclass_clf.classes_)
    assert restored.history_ == multiclass_clf.history_
    assert restored.get_params() == multiclass_clf.get_params()
    assert restored.model_ is not multiclass_clf.model_


def test_pickle_holds_keras_bytes_not_the_model(binary_clf):
    state = binary_clf.__getstate__()
    assert "model_" not in state
    (payload,) = [value for value in state.values() if isinstance(value, bytes)]
    assert payload[:2] == b"PK"  # a .keras zip archive
    assert "model_" in binary_clf.__dict__  # the estimator itself is untouched


def test_joblib_round_trip(binary_clf, binary_data, tmp_path):
    X, _ = binary_data
    path = tmp_path / "clf.joblib"
    joblib.dump(binary_clf, path)
    restored = joblib.load(path)
    np.testing.assert_array_equal(
        restored.predict_proba(X), binary_clf.predict_proba(X)
    )


def test_unfitted_estimator_pickles():
    clf = KerasMLPClassifier(class_weight={"cat": 2.0}, random_state=1)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.get_params() == clf.get_params()
    with pytest.raises(NotFittedError):
        restored.predict(np.zeros((1, 3)))


def test_clone_is_an_unfitted_twin(binary_clf):
    twin = clone(binary_clf)
    assert twin.get_params() == binary_clf.get_params()
    assert not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.predict_proba(np.zeros((1, 4)))


def test_model_bytes_round_trip():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    data = model_to_bytes(model)

    restored = model_from_bytes(data)
    assert restored is not model
    for saved, loaded in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(saved, loaded)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 1
    assert getattr(model_from_bytes(data, compile=False), "optimizer", None) is None


@pytest.mark.parametrize(
    "param, value",
    [
        ("hidden_units", 0),
        ("hidden_units", 2.5),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("optimizer", "adamx"),
        ("optimizer", None),
        ("learning_rate", 0),
        ("learning_rate", "fast"),
        ("epochs", 0),
        ("batch_size", 0),
        ("early_stopping", "yes"),
        ("validation_fraction", 0.0),
        ("validation_fraction", 1.0),
        ("n_iter_no_change", 0),
        ("class_weight", "auto"),
        ("class_weight", [1.0, 2.0]),
        ("random_state", "seed"),
        ("verbose", -1),
    ],
)
def test_invalid_parameters(binary_data, param, value):
    X, y = binary_data
    with pytest.raises(ValueError, match=rf"'{param}' parameter of KerasMLPClassifier"):
        KerasMLPClassifier(**{param: value}).fit(X, y)


def test_init_only_stores_parameters():
    # Validation happens in fit, so set_params and clone accept anything.
    clf = KerasMLPClassifier(hidden_units=-5, optimizer="nope")
    assert clf.hidden_units == -5
    assert clf.optimizer == "nope"


def test_class_weight_with_unknown_label(binary_data):
    X, y = binary_data
    with pytest.raises(ValueError, match=r"class_weight has keys \['cow'\].*'cat'"):
        fast(class_weight={"cow": 2.0}).fit(X, y)


@pytest.mark.parametrize("weight", [-1.0, np.nan, "heavy"])
def test_class_weight_with_invalid_weight(binary_data, weight):
    X, y = binary_data
    with pytest.raises(ValueError, match=r"class_weight\['dog'\] must be a finite"):
        fast(class_weight={"dog": weight}).fit(X, y)


def test_early_stopping_hold_out_too_small():
    X = np.arange(20.0).reshape(10, 2)
    y = np.array(["cat"] * 9 + ["dog"])
    with pytest.raises(ValueError, match="validation_fraction=0.1 of the 10"):
        fast(early_stopping=True).fit(X, y)


def test_single_class_raises():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="only one class: 'cat'"):
        fast().fit(X, ["cat"] * 5)


def test_predict_before_fit_raises():
    clf = KerasMLPClassifier()
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(NotFittedError):
            method(np.zeros((2, 3)))


def test_n_features_mismatch_at_predict(binary_clf):
    with pytest.raises(ValueError, match="X has 3 features, but KerasMLPClassifier"):
        binary_clf.predict(np.zeros((2, 3)))


def test_no_sample_weight():
    with pytest.raises(TypeError, match="sample_weight"):
        KerasMLPClassifier().fit(np.zeros((4, 2)), [0, 1, 0, 1], sample_weight=None)


def test_verbose_prints_keras_progress(binary_data, capsys):
    X, y = binary_data
    fast(epochs=1, verbose=2).fit(X, y)
    assert "loss" in capsys.readouterr().out
    fast(epochs=1, verbose=0).fit(X, y)
    assert capsys.readouterr().out == ""


def test_probabilities_do_not_depend_on_row_order(binary_clf, binary_data):
    X, _ = binary_data
    order = np.random.default_rng(0).permutation(len(X))
    proba = binary_clf.predict_proba(X)
    np.testing.assert_allclose(binary_clf.predict_proba(X[order]), proba[order], rtol=1e-12)
