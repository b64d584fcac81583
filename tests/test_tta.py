"""ConvFeatureExtractor(tta="flip"): features averaged over the image and its mirror."""

import pickle

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_convfeat import ConvFeatureExtractor, _cache, _images
from sklearn_convfeat._images import UnreadableImageWarning

SMALL = dict(weights=None, image_size=(32, 32), random_state=0, batch_size=4)
pytestmark = pytest.mark.usefixtures("empty_ram_cache")


@pytest.fixture
def tiny():
    """Five 32×32 RGB images: at image_size 32 the resize is the identity."""
    return np.random.default_rng(3).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def decodes(monkeypatch):
    """Paths of every image file decoded."""
    seen = []
    real = _images.decode_image

    def spy(path, size=None):
        seen.append(path)
        return real(path, size=size)

    monkeypatch.setattr(_images, "decode_image", spy)
    return seen


def save_pngs(folder, images):
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{index}.png"
        Image.fromarray(image).save(path)  # lossless: the same pixels as the array
        paths.append(str(path))
    return paths


def mean_of_image_and_mirror(images, **params):
    plain = ConvFeatureExtractor(**SMALL, **params).fit(images)
    image, mirror = plain.transform(images), plain.transform(images[:, :, ::-1])
    assert not np.allclose(image, mirror, rtol=1e-3)  # the mirror is another image
    return (image + mirror) / 2


@pytest.mark.parametrize("pooling", ["flatten", "avg", "max"])
@pytest.mark.parametrize("memory", [False, True])
def test_flip_is_the_mean_of_the_features_of_the_image_and_its_mirror(
    tmp_path, tiny, pooling, memory
):
    expected = mean_of_image_and_mirror(tiny, pooling=pooling)
    extractor = ConvFeatureExtractor(
        **SMALL, pooling=pooling, tta="flip", memory=tmp_path if memory else None
    )
    features = extractor.fit_transform(tiny)
    assert features.dtype == np.float32
    assert features.shape == (len(tiny), extractor.n_features_out_)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_the_mirror_is_taken_after_resizing(tiny):
    larger = np.repeat(np.repeat(tiny, 2, axis=1), 2, axis=2)[:, :40, :48]  # 40×48
    features = ConvFeatureExtractor(**SMALL, pooling="avg", tta="flip").fit_transform(larger)
    # Resizing commutes with the mirror up to rounding: same as mirroring the input.
    expected = mean_of_image_and_mirror(larger, pooling="avg")
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_a_mirror_symmetric_image_has_the_same_features_with_and_without_tta(tiny):
    symmetric = np.concatenate([tiny[:, :, :16], tiny[:, :, :16][:, :, ::-1]], axis=2)
    for pooling in ("flatten", "avg"):
        plain = ConvFeatureExtractor(**SMALL, pooling=pooling).fit_transform(symmetric)
        flipped = ConvFeatureExtractor(
            **SMALL, pooling=pooling, tta="flip"
        ).fit_transform(symmetric)
        np.testing.assert_allclose(flipped, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("memory", [False, True])
def test_paths_give_the_features_of_arrays_and_each_file_is_decoded_once(
    tmp_path, tiny, decodes, memory
):
    paths = save_pngs(tmp_path, tiny)
    params = dict(SMALL, pooling="avg", tta="flip")
    from_arrays = ConvFeatureExtractor(**params).fit_transform(tiny)
    extractor = ConvFeatureExtractor(
        **params, memory=tmp_path / "cache" if memory else None
    ).fit(paths)
    decodes.clear()
    np.testing.assert_allclose(extractor.transform(paths), from_arrays, rtol=1e-5, atol=1e-6)
    assert sorted(decodes) == sorted(paths)


def test_a_second_transform_hits_the_cache_and_equals_the_first(
    tmp_path, tiny, segment_calls
):
    extractor = ConvFeatureExtractor(**SMALL, tta="flip", memory=tmp_path).fit(tiny)
    first = extractor.transform(tiny)
    # Image and mirror computed once each, never more than batch_size per pass.
    assert sum(n for *_, n in segment_calls) == 2 * len(tiny)
    assert max(n for *_, n in segment_calls) <= SMALL["batch_size"]
    n_passes = len(segment_calls)
    _cache.clear_ram_cache()  # a new process: only the disk
    np.testing.assert_array_equal(extractor.transform(tiny), first)
    np.testing.assert_array_equal(extractor.transform(tiny), first)  # RAM hits
    assert len(segment_calls) == n_passes
    maps = sorted(tmp_path.rglob("block5_pool/*/*.map"))
    assert len(maps) == 2 * len(tiny)
    assert sum(path.stem.endswith("-mirror") for path in maps) == len(tiny)


def test_with_and_without_tta_share_the_unflipped_entries(tmp_path, tiny, segment_calls):
    plain = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(tiny).transform(tiny)
    assert sum(n for *_, n in segment_calls) == len(tiny)
    flip = ConvFeatureExtractor(**SMALL, tta="flip", memory=tmp_path).fit(tiny)
    features = flip.transform(tiny)
    assert sum(n for *_, n in segment_calls) == 2 * len(tiny)  # only the mirrors ran
    np.testing.assert_allclose(
        features, mean_of_image_and_mirror(tiny), rtol=1e-5, atol=1e-6
    )
    calls = len(segment_calls)  # and the plain extractor now runs nothing
    np.testing.assert_array_equal(
        ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(tiny).transform(tiny), plain
    )
    assert len(segment_calls) == calls


def test_a_deeper_cut_resumes_each_view_from_its_own_cached_map(
    tmp_path, tiny, segment_calls
):
    ConvFeatureExtractor(**SMALL, layer=3, tta="flip", memory=tmp_path).fit_transform(tiny)
    segment_calls.clear()
    deeper = ConvFeatureExtractor(**SMALL, layer=5, tta="flip", memory=tmp_path).fit(tiny)
    features = deeper.transform(tiny)
    assert {start for start, *_ in segment_calls} == {"block3_pool"}
    assert sum(n for *_, n in segment_calls) == 2 * len(tiny)
    np.testing.assert_allclose(
        features, mean_of_image_and_mirror(tiny), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("memory", [False, True])
def test_unreadable_files_are_skipped_once_and_their_rows_are_nan(tmp_path, tiny, memory):
    paths = save_pngs(tmp_path, tiny)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    X = [*paths[:2], str(broken), *paths[2:]]
    extractor = ConvFeatureExtractor(
        **SMALL, tta="flip", on_error="skip", memory=tmp_path / "c" if memory else None
    )
    with pytest.warns(UnreadableImageWarning, match="broken.png"):
        features = extractor.fit(X).transform(X)
    assert np.isnan(features[2]).all() and not np.isnan(np.delete(features, 2, 0)).any()
    assert [index for index, _, _ in extractor.skipped_] == [2]
    np.testing.assert_allclose(
        np.delete(features, 2, 0),
        ConvFeatureExtractor(**SMALL, tta="flip").fit_transform(tiny),
        rtol=1e-5, atol=1e-6,
    )


def test_clone_get_params_and_set_params_after_fit(tiny):
    extractor = ConvFeatureExtractor(**SMALL, pooling="avg", tta="flip")
    assert extractor.get_params()["tta"] == "flip"
    assert clone(extractor).tta == "flip"
    assert ConvFeatureExtractor().tta is None
    fitted = ConvFeatureExtractor(**SMALL, pooling="avg").fit(tiny)
    plain = fitted.transform(tiny)
    # Augmentation needs no refit: it changes what transform averages, not fit.
    np.testing.assert_allclose(
        fitted.set_params(tta="flip").transform(tiny),
        mean_of_image_and_mirror(tiny, pooling="avg"),
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_array_equal(fitted.set_params(tta=None).transform(tiny), plain)


def test_pickle_round_trip_keeps_tta(tiny):
    extractor = ConvFeatureExtractor(**SMALL, pooling="avg", tta="flip").fit(tiny)
    restored = pickle.loads(pickle.dumps(extractor))
    assert restored.tta == "flip"
    np.testing.assert_allclose(
        restored.transform(tiny), extractor.transform(tiny), rtol=1e-6, atol=1e-7
    )


def test_an_extractor_pickled_before_tta_existed_has_none(tiny):
    extractor = ConvFeatureExtractor(**SMALL, pooling="avg").fit(tiny)
    state = extractor.__getstate__()
    del state["tta"]
    old = ConvFeatureExtractor.__new__(ConvFeatureExtractor)
    old.__setstate__(state)
    assert old.get_params()["tta"] is None
    np.testing.assert_array_equal(old.transform(tiny), extractor.transform(tiny))


@pytest.mark.parametrize("value", ["flips", "mirror", True])
def test_a_bad_value_names_the_parameter_and_the_options(tiny, value):
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'tta' parameter of ConvFeatureExtractor must be a str among "
        r"\{('flip', 'dihedral'|'dihedral', 'flip')\} or None\. Got .* instead\.",
    ):
        ConvFeatureExtractor(**SMALL, tta=value).fit(tiny)


def test_in_a_pipeline_training_and_prediction_see_the_averaged_features(tiny):
    y = [0, 1, 0, 1, 0]
    pipe = Pipeline([
        ("feat", ConvFeatureExtractor(**SMALL, pooling="avg", tta="flip")),
        ("clf", LogisticRegression()),
    ]).fit(tiny, y)
    features = mean_of_image_and_mirror(tiny, pooling="avg")
    np.testing.assert_allclose(
        pipe.named_steps["clf"].coef_,
        LogisticRegression().fit(features, y).coef_,
        rtol=1e-4, atol=1e-6,
    )
    np.testing.assert_array_equal(
        pipe.predict(tiny), pipe.named_steps["clf"].predict(features)
    )


@pytest.mark.parametrize("memory", [False, True])
def test_an_exported_backend_averages_the_same_views(tmp_path, tiny, monkeypatch, memory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from sklearn_convfeat import _backends

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    _backends.clear_cache()
    try:
        params = dict(SMALL, layer="block2_pool", pooling="avg", tta="flip")
        reference = ConvFeatureExtractor(**params).fit_transform(tiny)
        features = ConvFeatureExtractor(
            **params, backend="onnxruntime", memory=tmp_path / "c" if memory else None
        ).fit_transform(tiny)
    finally:
        _backends.clear_cache()
    error = np.abs(features - reference).max() / np.abs(reference).max()
    assert error < 1e-4


def test_dask_transform_averages_the_views_too(tiny):
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    from sklearn_convfeat.dask import transform

    extractor = ConvFeatureExtractor(**SMALL, pooling="avg", tta="flip").fit(tiny)
    features = transform(extractor, da.from_array(tiny, chunks=(2, -1, -1, -1)))
    np.testing.assert_allclose(
        features.compute(scheduler="synchronous"), extractor.transform(tiny),
        rtol=1e-5, atol=1e-6,
    )
