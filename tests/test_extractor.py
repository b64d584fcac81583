import pickle

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_convfeat import ConvFeatureExtractor, load_image_folder
from sklearn_convfeat._images import UnreadableImageWarning


def small(**params):
    """An offline extractor on tiny images."""
    return ConvFeatureExtractor(
        **{"weights": None, "image_size": (32, 32), "random_state": 0, **params}
    )


@pytest.mark.parametrize(
    "layer, pooling, n_features",
    [
        ("block5_pool", "flatten", 512),
        (5, "avg", 512),
        (3, "flatten", 4 * 4 * 256),
        ("block3_pool", "max", 256),
        ("block4_conv2", "flatten", 4 * 4 * 512),
        ("block1_conv1", "avg", 64),
    ],
)
def test_output_shape_dtype_and_names(images, layer, pooling, n_features):
    extractor = small(layer=layer, pooling=pooling).fit(images)
    features = extractor.transform(images)
    assert features.shape == (len(images), n_features) == (6, extractor.n_features_out_)
    assert features.dtype == np.float32
    names = extractor.get_feature_names_out()
    assert len(names) == n_features and len(set(names)) == n_features
    assert names[0].startswith(extractor.layer_)


def test_fitted_attributes(images):
    extractor = small(layer=4).fit(images)
    assert extractor.layer_ == "block4_pool"
    assert extractor.image_size_ == (32, 32)
    assert extractor.feature_map_shape_ == (2, 2, 512)
    assert extractor.weights_path_ is None
    assert len(extractor.weights_sha256_) == 64


def test_fit_learns_nothing_from_the_data(images):
    first = small().fit(images).transform(images)
    refit = small().fit(np.zeros((1, 50, 50), dtype=np.uint8)).transform(images)
    np.testing.assert_array_equal(first, refit)


def test_book_feature_count_at_150(images):
    extractor = ConvFeatureExtractor(weights=None, random_state=0).fit(images[:1])
    assert extractor.n_features_out_ == 4 * 4 * 512


def test_images_are_resized_whatever_their_size():
    rng = np.random.default_rng(0)
    extractor = small(pooling="avg").fit(rng.integers(0, 256, size=(1, 32, 32, 3)))
    for shape in [(2, 32, 32, 3), (2, 100, 45, 3), (2, 33, 32, 1), (2, 64, 64)]:
        assert extractor.transform(rng.integers(0, 256, size=shape)).shape == (2, 512)


def test_uint8_and_float_images_give_the_same_features(images):
    extractor = small().fit(images)
    np.testing.assert_array_equal(
        extractor.transform(images), extractor.transform(images.astype(np.float64))
    )


def test_grey_and_rgba_inputs_equal_their_rgb_equivalents(images):
    extractor = small().fit(images)
    grey = images[..., 0]
    np.testing.assert_array_equal(
        extractor.transform(grey), extractor.transform(np.repeat(grey[..., None], 3, axis=-1))
    )
    rgba = np.concatenate([images, np.full((*images.shape[:3], 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(extractor.transform(rgba), extractor.transform(images))


def test_batch_size_does_not_change_the_features(images):
    one = small(batch_size=1).fit(images).transform(images)
    all_at_once = small(batch_size=64).fit(images).transform(images)
    np.testing.assert_allclose(one, all_at_once, rtol=1e-5, atol=1e-6)


def test_paths_give_the_same_features_as_the_decoded_arrays(tmp_path, images):
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    extractor = small(batch_size=4).fit(paths)
    np.testing.assert_array_equal(extractor.transform(paths), extractor.transform(images))


def test_preprocessing_choice_changes_the_features(images):
    vgg = small().fit(images).transform(images)
    rescaled = small(preprocessing="rescale").fit(images).transform(images)
    assert not np.allclose(vgg, rescaled)


def test_random_state_seeds_the_random_weights(images):
    a = small(random_state=1).fit(images).transform(images)
    b = small(random_state=1).fit(images).transform(images)
    c = small(random_state=2).fit(images).transform(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("dump_load", ["pickle", "joblib"])
def test_round_trip_gives_bit_identical_features(tmp_path, images, dump_load):
    extractor = small(layer=4, pooling="max").fit(images)
    expected = extractor.transform(images)
    if dump_load == "pickle":
        restored = pickle.loads(pickle.dumps(extractor))
    else:
        joblib.dump(extractor, tmp_path / "extractor.joblib")
        restored = joblib.load(tmp_path / "extractor.joblib")
    assert "_runner" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(images), expected)


def test_pickle_never_contains_the_keras_model(images):
    extractor = small().fit(images)
    extractor.transform(images)  # builds the forward function
    assert len(pickle.dumps(extractor)) < 10_000


def test_round_trip_with_a_weights_file(tmp_path, images):
    from sklearn_convfeat._backbone import get_base
    from sklearn_convfeat._weights import WeightsSource

    path = tmp_path / "base.weights.h5"
    get_base(WeightsSource("random", seed=5)).model.save_weights(path)
    extractor = ConvFeatureExtractor(weights=str(path), image_size=32).fit(images)
    assert extractor.weights_path_ == str(path)
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(restored.transform(images), extractor.transform(images))


def test_changed_weights_file_after_fit_is_detected(tmp_path, images):
    from sklearn_convfeat._backbone import clear_cache, get_base
    from sklearn_convfeat._weights import WeightsSource

    path = tmp_path / "base.weights.h5"
    get_base(WeightsSource("random", seed=5)).model.save_weights(path)
    extractor = pickle.loads(pickle.dumps(ConvFeatureExtractor(weights=str(path)).fit(images)))
    get_base(WeightsSource("random", seed=6)).model.save_weights(path)
    clear_cache()
    with pytest.raises(RuntimeError, match="changed since this extractor was fitted.*Fit it again"):
        extractor.transform(images)


def test_clone_is_unfitted_with_the_same_parameters(images):
    extractor = small(layer=3).fit(images)
    twin = clone(extractor)
    assert twin.get_params() == extractor.get_params()
    with pytest.raises(NotFittedError):
        twin.transform(images)


def test_set_output_pandas(images):
    pd = pytest.importorskip("pandas")
    extractor = small(pooling="avg").set_output(transform="pandas")
    frame = extractor.fit_transform(images)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(extractor.get_feature_names_out())


def test_pipeline_with_logistic_regression_learns_a_visible_difference(image_folder):
    paths, y, _ = load_image_folder(image_folder)
    pipe = Pipeline([("feat", small(pooling="avg")), ("clf", LogisticRegression())])
    pipe.fit(paths, y)
    assert pipe.score(paths, y) == 1.0  # dark vs bright images: separable even at random


def test_pipeline_with_the_mlp_head(image_folder):
    from sklearn_convfeat import KerasMLPClassifier

    paths, y, class_names = load_image_folder(image_folder)
    labels = np.asarray(class_names)[y]
    head = KerasMLPClassifier(epochs=20, learning_rate=1e-2, optimizer="adam", random_state=0)
    pipe = Pipeline([("feat", small(pooling="avg")), ("clf", head)]).fit(paths, labels)
    assert set(pipe.predict(paths)) <= set(class_names)
    assert pipe.predict_proba(paths).shape == (len(paths), 2)


def test_grid_search_over_the_cut_depth(image_folder):
    paths, y, _ = load_image_folder(image_folder)
    pipe = Pipeline([("feat", small(pooling="avg")), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"feat__layer": [3, 4, "block5_pool"]}, cv=2).fit(paths, y)
    assert len(search.cv_results_["params"]) == 3
    assert search.best_estimator_.named_steps["feat"].layer_ in {
        "block3_pool", "block4_pool", "block5_pool"
    }


def test_verbose_shows_a_progress_bar(images, capsys):
    small(verbose=1, batch_size=2).fit(images).transform(images)
    assert "3/3" in capsys.readouterr().out


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"layer": "blok5_pool"}, "`layer` must be a stage number \\(1='block1_pool'.*5='block5_pool'\\) or the name of a layer of VGG16. Got 'blok5_pool' instead"),
        ({"backbone": "resnet5"}, "`backbone` must be a keras.Model or the name of a keras.applications convnet .*Got 'resnet5' instead. Did you mean 'ResNet50'\\?"),
        ({"backbone": "convnexttiny", "layer": 1}, "`layer` must be one of the stages of ConvNeXtTiny, \\[2, 3, 4, 5\\].*Got layer=1 instead"),
        ({"layer": 6}, "'layer' parameter .* an int in the range \\[1, 5\\]. Got 6 instead"),
        ({"pooling": "mean"}, "'pooling' parameter .* must be a str among .*avg.*Got 'mean' instead"),
        ({"preprocessing": "caffe"}, "'preprocessing' parameter .*rescale.*Got 'caffe' instead"),
        ({"batch_size": 0}, "'batch_size' parameter .* range \\[1, inf\\). Got 0 instead"),
        ({"on_error": "ignore"}, "'on_error' parameter .*Got 'ignore' instead"),
        ({"image_size": (16, 16)}, "`image_size` must be at least \\(32, 32\\) for layer='block5_pool' of VGG16.*Got \\(16, 16\\)"),
        ({"image_size": (40, 40, 3)}, "`image_size` must be an int, a \\(height, width\\) pair"),
        ({"weights": "/no/such/weights.h5"}, "`weights` must be 'imagenet', None, or the path .*not a file"),
    ],
)
def test_bad_parameters_are_named_with_the_fix(images, params, match):
    with pytest.raises(ValueError, match=match):
        small(**params).fit(images)


def test_a_shallow_cut_allows_smaller_images():
    X = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    assert small(layer=3, image_size=8).fit(X).transform(X).shape == (1, 256)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 36, 36, 2)), "with 2 channels"),
        (np.zeros((2, 36, 36, 5)), "with 5 channels"),
        (np.zeros((36, 36)), "Got an array of shape \\(36, 36\\)"),
        (np.full((2, 36, 36, 3), np.nan), "contains NaN"),
        (np.full((2, 36, 36, 3), np.inf), "contains infinity"),
        (np.zeros((0, 36, 36, 3)), "X is empty"),
    ],
)
def test_bad_images_are_rejected_in_fit_and_transform(images, X, match):
    with pytest.raises(ValueError, match=match):
        small().fit(X)
    fitted = small().fit(images)
    with pytest.raises(ValueError, match=match):
        fitted.transform(X)


def test_x_and_y_of_different_lengths(images):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        small().fit(images, [0, 1])
    pipe = Pipeline([("feat", small()), ("clf", LogisticRegression())])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        pipe.fit(images, [0, 1])


def test_missing_path_is_reported_at_fit(image_folder):
    paths, _, _ = load_image_folder(image_folder)
    with pytest.raises(FileNotFoundError, match="1 of the 7 image paths in X do not exist.*'nope.jpg'"):
        small().fit(list(paths) + ["nope.jpg"])


def test_undecodable_file_is_named(tmp_path, image_folder):
    paths, _, _ = load_image_folder(image_folder)
    bad = tmp_path / "bad.png"
    bad.write_text("this is text")
    extractor = small().fit(paths)
    with pytest.raises(ValueError, match="Cannot read image file '.*bad.png' \\(X\\[6\\]\\)"):
        extractor.transform(list(paths) + [str(bad)])


def test_skip_keeps_the_work_on_the_other_files(tmp_path, image_folder):
    paths, _, _ = load_image_folder(image_folder)
    bad = tmp_path / "bad.png"
    bad.write_text("this is text")
    X = list(paths[:3]) + [str(bad)] + list(paths[3:])
    extractor = small(on_error="skip", batch_size=4).fit(X)
    with pytest.warns(UnreadableImageWarning, match="Skipped 1 unreadable image file.*bad.png"):
        features = extractor.transform(X)
    assert extractor.skipped_[0][:2] == (3, str(bad))
    assert np.isnan(features[3]).all()
    good = np.delete(features, 3, axis=0)
    np.testing.assert_array_equal(good, small().fit(paths).transform(paths))


def test_unfitted_transform_raises(images):
    with pytest.raises(NotFittedError):
        small().transform(images)


def test_transform_leaves_the_estimator_unchanged(images):
    extractor = small().fit(images)
    before = dict(extractor.__dict__)
    extractor.transform(images)
    assert extractor.__dict__ == before


def test_row_order_and_subsets_do_not_change_features(images):
    extractor = small(batch_size=4).fit(images)
    features = extractor.transform(images)
    order = np.random.default_rng(0).permutation(len(images))
    np.testing.assert_allclose(extractor.transform(images[order]), features[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(extractor.transform(images[2:3]), features[2:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("memory", [None, "cache"])
@pytest.mark.parametrize(
    "change", [{"pooling": "avg"}, {"layer": 4}, {"image_size": (48, 48)},
               {"preprocessing": "rescale"}, {"random_state": 1}],
)
def test_parameters_changed_after_fit_need_a_new_fit(tmp_path, images, memory, change):
    memory = None if memory is None else tmp_path
    extractor = ConvFeatureExtractor(
        weights=None, image_size=(32, 32), random_state=0, memory=memory
    ).fit(images)
    extractor.set_params(**change)
    name = next(iter(change))
    with pytest.raises(ValueError, match=rf"\['{name}'\] of this ConvFeatureExtractor changed after fit"):
        extractor.transform(images)
    with pytest.raises(ValueError, match="call fit again"):
        extractor.get_feature_names_out()
    refitted = extractor.fit(images)
    assert refitted.transform(images).shape == (len(images), refitted.n_features_out_)


def test_settings_that_do_not_change_features_may_change_after_fit(images):
    extractor = ConvFeatureExtractor(weights=None, image_size=(32, 32), random_state=0)
    expected = extractor.fit_transform(images)
    extractor.set_params(batch_size=1, on_error="skip", verbose=0, image_size=[32, 32])
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-5, atol=1e-6)
