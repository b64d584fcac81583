"""FineTuner's data-driven defaults: the probe behind unfreeze="auto" and
augment="auto", and the dihedral augmentation at cached cost."""

import itertools

import numpy as np
import pytest

from sklearn_convfeat import FineTuner, FineTunerRegressor
from sklearn_convfeat._backbone import get_base
from sklearn_convfeat._finetune_auto import (
    ADJUST,
    RELEARN,
    ROTATION_TOLERANCE,
    auto_augment,
    auto_setting,
    probe_data,
    top_stage_fits,
)
from sklearn_convfeat._finetune_phases import CachedTraining
from sklearn_convfeat._images import check_images
from sklearn_convfeat._map_augmentation import QuarterTurns, cached_views
from sklearn_convfeat._tta import SHAPE_KEEPING_VIEWS, VIEWS, view_of
from sklearn_convfeat._weights import WeightsSource

SIZE = 48


@pytest.fixture(scope="module")
def day_night():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(18, SIZE, SIZE, 3), dtype=np.uint8)
    X[::2] //= 4  # dark images are "night"
    return X, np.array(["night", "day"] * 9)


def tuner(**params):
    defaults = dict(weights=None, image_size=SIZE, head_epochs=1, fine_tune_epochs=1,
                    batch_size=6, hidden_units=8, random_state=0)
    return FineTuner(**{**defaults, **params})


def test_views_are_the_eight_symmetries_of_the_square():
    image = np.arange(3 * 3 * 3, dtype=np.float32).reshape(1, 3, 3, 3)
    seen = {view: view_of(image, view) for view in VIEWS}
    assert len({array.tobytes() for array in seen.values()}) == 8
    np.testing.assert_array_equal(seen["rot90"][0, :, :, 0], np.rot90(image[0, :, :, 0]))
    np.testing.assert_array_equal(seen["transpose"][0, :, :, 0], image[0, :, :, 0].T)
    # A group: every composition of two views is a view.
    for first, second in itertools.product(VIEWS, repeat=2):
        composed = view_of(view_of(image, first), second).tobytes()
        assert composed in {array.tobytes() for array in seen.values()}, (first, second)
    wide = np.zeros((2, 3, 5, 3), np.float32)
    assert all(view_of(wide, view).shape == wide.shape for view in SHAPE_KEEPING_VIEWS)


def test_unknown_view_is_named():
    with pytest.raises(ValueError, match="`view` must be one of .*'rot90'.*Got 'rot45'"):
        view_of(np.zeros((1, 2, 2, 3)), "rot45")


@pytest.mark.parametrize(
    "augment, size, expected",
    [("dihedral", (8, 8), VIEWS), ("dihedral", (8, 12), SHAPE_KEEPING_VIEWS),
     ("cached", (8, 8), ("image", "mirror")), ("flip", (8, 8), ("image", "mirror"))],
)
def test_cached_views(augment, size, expected):
    assert cached_views(augment, size) == expected


@pytest.mark.parametrize("shape, turns", [((3, 3), ("image", "rot90", "rot180", "rot270")),
                                          ((3, 4), ("image", "rot180"))])
def test_quarter_turns_turn_each_image_by_a_drawn_multiple(shape, turns):
    images = np.random.default_rng(0).random((40, *shape, 3)).astype(np.float32)
    turned = QuarterTurns()(images, np.random.default_rng(1))
    drawn = []
    for original, out in zip(images, turned):
        matches = [turn for turn in turns
                   if np.array_equal(view_of(original[None], turn)[0], out)]
        assert len(matches) == 1
        drawn.append(matches[0])
    assert set(drawn) == set(turns)  # every allowed turn is drawn
    np.testing.assert_array_equal(turned, QuarterTurns()(images, np.random.default_rng(1)))


def report(scores, rotated):
    best = max(reversed(list(scores)), key=scores.get)
    return {"stage_scores": scores, "best_stage": best, "upright_score": scores[best],
            "rotated_score": rotated, "n_images": 100}


@pytest.mark.parametrize(
    "scores, rotated, fits, augment",
    [
        # cats vs dogs: the top stage probes best, a quarter turn costs points
        ({3: 0.90, 4: 0.95, 5: 0.97}, 0.80, True, "cached"),
        # aerial scenes: a lower stage probes best, orientation carries nothing
        ({3: 0.95, 4: 0.96, 5: 0.93}, 0.955, False, "dihedral"),
        # a tie goes to the top stage; the tolerance is inclusive
        ({3: 0.9, 4: 0.9, 5: 0.9}, 0.9 - ROTATION_TOLERANCE, True, "dihedral"),
        ({3: 0.9, 4: 0.8, 5: 0.7}, None, False, "cached"),  # non-square: no turn tried
    ],
)
def test_auto_decisions(scores, rotated, fits, augment):
    probe = report(scores, rotated)
    assert top_stage_fits(probe) is fits
    expected = ADJUST if fits else RELEARN
    for name in ADJUST:
        assert auto_setting(name, probe, n_stages=5) == expected[name]
    assert auto_setting("unfreeze", probe, n_stages=1) == 1
    assert auto_augment(probe) == augment


def test_no_probe_keeps_the_books_settings():
    assert top_stage_fits(None)
    assert ADJUST == {"unfreeze": 1, "head_learning_rate": 1e-4,
                      "fine_tune_learning_rate": 1e-5, "pooling": "flatten"}
    assert auto_augment(None) == "cached"


@pytest.fixture(scope="module")
def random_vgg():
    source = WeightsSource("random", seed=0)
    return source, get_base(source)


def test_probe_scores_the_top_three_stages(day_night, random_vgg):
    X, y = day_night
    source, entry = random_vgg
    labels = np.searchsorted(np.unique(y), y)
    result = probe_data(source, entry, "vgg16", (SIZE, SIZE), check_images(X), labels,
                        stratify=labels, seed=0, batch_size=8)
    assert set(result["stage_scores"]) == {3, 4, 5}
    assert all(0 <= score <= 1 for score in result["stage_scores"].values())
    assert result["upright_score"] == result["stage_scores"][result["best_stage"]]
    assert 0 <= result["rotated_score"] <= 1
    assert result["n_images"] == len(y)

    too_few = probe_data(source, entry, "vgg16", (SIZE, SIZE), check_images(X[:3]),
                         labels[:3], stratify=labels[:3], seed=0, batch_size=8)
    assert too_few is None


def test_auto_defaults_probe_and_record_the_decision(day_night):
    X, y = day_night
    assert FineTuner().get_params()["unfreeze"] == "auto"
    assert FineTuner().get_params()["augment"] == "auto"
    fitted = tuner().fit(X, y)
    probe = fitted.auto_probe_
    assert set(probe) == {"stage_scores", "best_stage", "upright_score",
                          "rotated_score", "n_images"}
    for name in ADJUST:
        assert getattr(fitted, f"{name}_") == auto_setting(name, probe, 5)
    assert fitted.augment_ == auto_augment(probe)
    assert fitted.history_["stages_trained"][-1] == fitted.unfreeze_
    head = fitted.model_.get_layer("flatten")
    assert type(head).__name__ == (
        "GlobalAveragePooling2D" if fitted.pooling_ == "avg" else "Flatten"
    )

    explicit = tuner(unfreeze=2, augment="flip", head_learning_rate=1e-4,
                     fine_tune_learning_rate=3e-5, pooling="avg").fit(X, y)
    assert explicit.auto_probe_ is None
    assert (explicit.unfreeze_, explicit.augment_) == (2, "flip")
    assert (explicit.fine_tune_learning_rate_, explicit.pooling_) == (3e-5, "avg")
    assert explicit.model_.get_layer("flatten").output.shape[-1] == 512


@pytest.mark.parametrize("size, n_views", [((SIZE, SIZE), 8), ((SIZE, 64), 4)])
def test_dihedral_caches_each_variant_once(day_night, monkeypatch, size, n_views):
    X, y = day_night
    extracted = []
    original = CachedTraining._extract

    def recording(self, images, name, views=("image",)):
        extracted.append((name, tuple(views)))
        return original(self, images, name, views)

    monkeypatch.setattr(CachedTraining, "_extract", recording)
    fitted = tuner(unfreeze=1, augment="dihedral", image_size=size, fine_tune_epochs=2)
    fitted.fit(X, y)
    assert extracted == [("train", VIEWS[:n_views])]
    assert fitted.cache_ == "memory"
    again = tuner(unfreeze=1, augment="dihedral", image_size=size, fine_tune_epochs=2)
    np.testing.assert_allclose(again.fit(X, y).predict_proba(X), fitted.predict_proba(X),
                               rtol=1e-5, atol=1e-6)


def test_dihedral_end_to_end_turns_the_images(day_night, monkeypatch):
    X, y = day_night
    calls = []
    original = QuarterTurns.__call__
    monkeypatch.setattr(QuarterTurns, "__call__",
                        lambda self, images, rng: calls.append(len(images))
                        or original(self, images, rng))
    fitted = tuner(unfreeze=1, augment="dihedral", cache=None).fit(X, y)
    assert fitted.cache_ is None
    assert sum(calls) >= 2 * len(y)  # every training image, in both phases
    assert fitted.model_.get_layer("augmentation") is not None  # flips and shifts


def test_regressor_probes_with_r2():
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0, 255, size=18)
    X = np.broadcast_to(brightness[:, None, None, None], (18, SIZE, SIZE, 3)).copy()
    fitted = FineTunerRegressor(weights=None, image_size=SIZE, head_epochs=1,
                                fine_tune_epochs=1, batch_size=6, hidden_units=8,
                                random_state=0).fit(X, brightness)
    scores = fitted.auto_probe_["stage_scores"]
    assert set(scores) == {3, 4, 5}
    assert all(score <= 1 for score in scores.values())  # R², may be negative
    assert fitted.unfreeze_ in (1, 2)
