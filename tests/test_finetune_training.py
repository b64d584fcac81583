"""FineTuner's training options: cached augmentation, schedules, discriminative
learning rates, gradual unfreezing, label smoothing, test-time augmentation."""

import pickle

import numpy as np
import pytest

from sklearn_convfeat import FineTuner
from sklearn_convfeat._map_augmentation import MapAugmentation, shift_maps
from sklearn_convfeat._optimization import (
    WARMUP_START,
    learning_rate_schedule,
    make_optimizer,
    smoothed_loss,
)

SIZE = 48


@pytest.fixture(scope="module")
def day_night():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(16, SIZE, SIZE, 3), dtype=np.uint8)
    X[::2] //= 4  # dark images are "night"
    return X, np.array(["night", "day"] * 8)


def tuner(**params):
    defaults = dict(weights=None, image_size=SIZE, head_epochs=2, fine_tune_epochs=2,
                    batch_size=4, random_state=0)
    return FineTuner(**{**defaults, **params})


def test_shift_maps_moves_cells_and_fills_zeros():
    maps = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1) + 1
    shifted = shift_maps(maps, np.array([[1, 0], [0, -1]]))
    # down by one row: the first row is new (zeros), the others are rows 0 and 1
    np.testing.assert_array_equal(shifted[0, :, :, 0], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    # left by one column: the last column is new
    np.testing.assert_array_equal(shifted[1, :, :, 0], [[11, 12, 0], [14, 15, 0], [17, 18, 0]])
    np.testing.assert_array_equal(shift_maps(maps, np.zeros((2, 2), int)), maps)


def test_map_augmentation_draws_one_variant_per_sample():
    variants = np.stack([np.zeros((50, 2, 2, 1)), np.ones((50, 2, 2, 1))], axis=1)
    chosen = MapAugmentation(shift=0)(variants, np.random.default_rng(0))
    assert chosen.shape == (50, 2, 2, 1)
    picked = chosen[:, 0, 0, 0]
    assert set(np.unique(picked)) == {0.0, 1.0}  # both variants are drawn
    np.testing.assert_array_equal(chosen, picked[:, None, None, None] * np.ones((1, 2, 2, 1)))
    again = MapAugmentation(shift=0)(variants, np.random.default_rng(0))
    np.testing.assert_array_equal(chosen, again)  # a seeded generator decides


def test_cosine_schedule_warms_up_then_anneals_to_zero():
    schedule = learning_rate_schedule("cosine", 1e-3, n_steps=100, warmup=0.1)
    rates = np.array([float(schedule(step)) for step in (0, 10, 55, 100)])
    np.testing.assert_allclose(rates[:2], [WARMUP_START * 1e-3, 1e-3], rtol=1e-5)
    assert 0 < rates[2] < 1e-3
    assert rates[3] == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_schedule("constant", 1e-3, n_steps=100, warmup=0.1) == 1e-3


def test_multipliers_scale_each_variables_step():
    import keras

    fast = keras.Variable(np.zeros(3), name="fast")
    slow = keras.Variable(np.zeros(3), name="slow")
    optimizer = make_optimizer("sgd", 0.1, multipliers={slow.path: 0.25})
    optimizer.apply([np.ones(3), np.ones(3)], [fast, slow])
    np.testing.assert_allclose(np.asarray(fast), -0.1)
    np.testing.assert_allclose(np.asarray(slow), -0.025)


def test_smoothed_loss_one_hot_for_several_classes():
    loss, encode = smoothed_loss("sparse_categorical_crossentropy", 0.1, 3)
    np.testing.assert_array_equal(encode(np.array([2, 0])), [[0, 0, 1], [1, 0, 0]])
    assert loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert smoothed_loss("binary_crossentropy", 0.0, 2)[0] == "binary_crossentropy"


def test_cached_flip_trains_on_the_cache_and_is_reproducible(day_night):
    X, y = day_night
    first = tuner(augment="cached", lr_mult=0.5).fit(X, y)
    second = tuner(augment="cached", lr_mult=0.5).fit(X, y)
    assert first.cache_ == "memory"
    assert [layer.name for layer in first.model_.layers][1] == "preprocessing"  # no aug
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    history = first.history_
    assert history["phase"] == [1, 1, 2, 2]
    assert history["stages_trained"] == [0, 0, 1, 1]
    assert len(history["learning_rate"]) == len(history["loss"]) == 4
    assert history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-12)  # annealed


def test_cached_augmentation_changes_training(day_night):
    X, y = day_night
    plain = tuner(augment=False).fit(X, y).predict_proba(X)
    flipped = tuner(augment="flip").fit(X, y).predict_proba(X)
    assert not np.allclose(plain, flipped)


@pytest.mark.slow
def test_end_to_end_falls_back_to_image_space_layers(day_night):
    X, y = day_night
    fitted = tuner(augment="cached", cache=None, fine_tune_epochs=1).fit(X, y)
    assert fitted.cache_ is None
    assert fitted.model_.get_layer("augmentation") is not None


@pytest.mark.slow
def test_gradual_unfreezing_trains_one_more_stage_per_step(day_night):
    X, y = day_night
    fitted = tuner(unfreeze=2, gradual_unfreezing=True, fine_tune_epochs=3).fit(X, y)
    assert fitted.history_["stages_trained"] == [0, 0, 1, 2, 2]


def test_tta_flip_averages_image_and_mirror(day_night):
    X, y = day_night
    fitted = tuner(tta="flip").fit(X, y)
    averaged = fitted.predict_proba(X)
    fitted.set_params(tta=None)
    plain = fitted.predict_proba(X)
    mirror = fitted.predict_proba(X[:, :, ::-1])
    np.testing.assert_allclose(averaged, (plain + mirror) / 2, atol=1e-6)
    fitted.set_params(tta="flip")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.predict_proba(X), averaged, atol=1e-6)


def test_label_smoothing_with_three_classes():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(12, SIZE, SIZE, 3), dtype=np.uint8)
    y = np.array(["a", "b", "c"] * 4)
    fitted = tuner(label_smoothing=0.2, optimizer="adamw", weight_decay=1e-4).fit(X, y)
    proba = fitted.predict_proba(X)
    assert proba.shape == (12, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"augment": "flips"}, r"The 'augment' parameter of FineTuner must be .*Got 'flips'"),
        ({"schedule": "onecycle"}, r"The 'schedule' parameter .*Got 'onecycle'"),
        ({"label_smoothing": 1.0}, r"The 'label_smoothing' parameter .*Got 1.0"),
        ({"lr_mult": 0}, r"The 'lr_mult' parameter .*Got 0"),
        ({"tta": "mirror"}, r"The 'tta' parameter .*Got 'mirror'"),
        ({"warmup": 1.0}, r"The 'warmup' parameter .*Got 1.0"),
    ],
)
def test_bad_training_options(day_night, params, match):
    X, y = day_night
    with pytest.raises(ValueError, match=match):
        tuner(**params).fit(X, y)
