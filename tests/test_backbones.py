"""Every keras.applications convnet, and a model of one's own, through the package.

Random weights (``weights=None``) and small images: what is checked is structure
(stages, shapes, preprocessing) and that every part of the package follows the
backbone, not the quality of any network.
"""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_convfeat import (
    BACKBONES,
    ConvFeatureExtractor,
    FineTuner,
    cam,
    count_flops,
)
from sklearn_convfeat._architectures import (
    FAMILIES,
    family,
    native_size,
    needs_fixed_size,
    preprocess,
)
from sklearn_convfeat._backbone import get_base, get_segment
from sklearn_convfeat._weights import WeightsSource

# The smallest network of each family runs the whole matrix.
REPRESENTATIVES = {
    name_family: min(
        (name for name in BACKBONES if family(name) == name_family),
        key=lambda name: (len(name), name),
    )
    for name_family in FAMILIES
}
REPRESENTATIVES["resnet"] = "ResNet50"
REPRESENTATIVES["efficientnet"] = "EfficientNetB0"
REPRESENTATIVES["convnext"] = "ConvNeXtTiny"
REPRESENTATIVES["densenet"] = "DenseNet121"
REPRESENTATIVES["nasnet"] = "NASNetMobile"


def size_for(name):
    if needs_fixed_size(name):
        return native_size(name)
    return (80, 80) if family(name) in ("xception", "inception_v3", "inception_resnet_v2") else (64, 64)


def images_for(name, n=6, seed=0):
    height, width = size_for(name)
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def extractor(name, **params):
    return ConvFeatureExtractor(
        backbone=name, weights=None, random_state=0, image_size=size_for(name), **params
    )


# These run by default; every other network and family runs with -m large_backbone.
DEFAULT = {"VGG16", "ResNet50", "MobileNetV3Small", "EfficientNetB0", "ConvNeXtTiny"}
# The whole matrix of a family costs 10-30 s: these two in the default tier, the other
# DEFAULT families in the slow one.
FAST = {"VGG16", "MobileNetV3Small"}


def marked(names, fast=DEFAULT):
    """``names`` as parameters: outside DEFAULT with -m large_backbone, outside
    ``fast`` in the slow tier."""
    params = []
    for name in sorted(names):
        marks = [] if name in DEFAULT else [pytest.mark.large_backbone]
        if name in DEFAULT and name not in fast:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def every_backbone():
    return marked(BACKBONES)


@pytest.mark.parametrize("name", every_backbone())
def test_every_backbone_builds_cuts_at_each_stage_and_reports_its_shapes(name):
    size = size_for(name)
    source = WeightsSource(
        "random", seed=0, architecture=name, input_size=size if needs_fixed_size(name) else None
    )
    entry = get_base(source)
    stages = entry.graph.stage_ends
    assert stages[5] == entry.graph.names[-1]  # stage 5 is the end of the base
    positions = [entry.graph.position[end] for end in stages.values()]
    assert positions == sorted(positions)
    for stage, end in stages.items():  # downsampled 2^N times at the native size
        assert entry.graph.reduction[end] == stage
    run = get_segment(source, None, stages[5], family(name), capture=tuple(stages.values()))
    maps = run(np.zeros((1, *size, 3), np.float32))
    for end in stages.values():
        assert maps[end].shape[1:] == entry.map_shape(end, size)


@pytest.mark.parametrize("name_family", FAMILIES)
def test_auto_preprocessing_is_the_family_preprocess_input(name_family):
    import keras

    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 5, 5, 3)).astype(np.float32)
    expected = getattr(keras.applications, name_family).preprocess_input(pixels.copy())
    np.testing.assert_allclose(np.asarray(preprocess(pixels, name_family)), expected, rtol=1e-6)
    fitted = extractor(REPRESENTATIVES[name_family]).fit(images_for(REPRESENTATIVES[name_family], 1))
    assert fitted.preprocessing_ == name_family


@pytest.mark.parametrize("name", marked(REPRESENTATIVES.values(), fast=FAST))
def test_each_family_extracts_at_every_stage_and_pools(name):
    X = images_for(name)
    entry_stages = get_base(
        WeightsSource("random", seed=0, architecture=name,
                      input_size=size_for(name) if needs_fixed_size(name) else None)
    ).graph.stage_ends
    for stage in entry_stages:
        fitted = extractor(name, layer=stage).fit(X)
        features = fitted.transform(X)
        assert features.shape == (len(X), int(np.prod(fitted.feature_map_shape_)))
        assert features.dtype == np.float32 and np.isfinite(features).all()
        assert fitted.get_feature_names_out()[0].startswith(fitted.layer_)
    flat = features.reshape(len(X), *fitted.feature_map_shape_)
    avg = extractor(name, pooling="avg").fit(X).transform(X)
    np.testing.assert_allclose(avg, flat.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", marked(REPRESENTATIVES.values(), fast=FAST))
def test_each_family_caches_pickles_and_clones(name, tmp_path):
    X = images_for(name)
    plain = extractor(name, layer=5, pooling="avg").fit(X)
    expected = plain.transform(X)
    cached = extractor(name, layer=5, pooling="avg", memory=tmp_path).fit(X)
    miss = cached.transform(X)
    hit = cached.transform(X)
    np.testing.assert_array_equal(hit, miss)  # a hit is what the miss computed
    np.testing.assert_allclose(miss, expected, rtol=1e-5, atol=1e-7)
    restored = pickle.loads(pickle.dumps(plain))
    np.testing.assert_array_equal(restored.transform(X), expected)
    assert clone(plain).get_params() == plain.get_params()


@pytest.mark.parametrize("name", marked(REPRESENTATIVES.values(), fast=FAST))
def test_each_family_explains_a_pipeline_and_fine_tunes(name):
    X = images_for(name)
    y = np.array([0, 1] * 3)
    pipe = Pipeline([("feat", extractor(name, pooling="avg")), ("clf", LogisticRegression())])
    heatmaps = cam(pipe.fit(X, y), X[:2])
    assert heatmaps.shape == (2, *X.shape[1:3]) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    tuner = FineTuner(
        backbone=name, weights=None, random_state=0, image_size=size_for(name),
        unfreeze=1, head_epochs=1, fine_tune_epochs=1, batch_size=3, hidden_units=8,
    ).fit(X, y)
    proba = tuner.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert len(tuner.history_["phase"]) == 2
    np.testing.assert_allclose(pickle.loads(pickle.dumps(tuner)).predict_proba(X), proba,
                               rtol=1e-5, atol=1e-6)
    assert cam(tuner, X[:1]).shape == (1, *X.shape[1:3])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    "name",
    ["ConvNeXtTiny", "EfficientNetB0"] + [
        pytest.param(name, marks=pytest.mark.large_backbone)
        for name in sorted(set(REPRESENTATIVES.values()) - {"VGG16", "ConvNeXtTiny", "EfficientNetB0"})
    ],
)
def test_exported_backends_match_tensorflow(name, backend, tmp_path, monkeypatch):
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino"}[backend])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    X = images_for(name, n=3)
    expected = extractor(name, pooling="avg").fit(X).transform(X)
    features = extractor(name, pooling="avg", backend=backend).fit(X).transform(X)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(features / scale, expected / scale, atol=1e-4)


def test_grid_search_over_the_backbone():
    X = np.random.default_rng(0).integers(0, 256, size=(8, 48, 48, 3), dtype=np.uint8)
    X[4:, :24] = 255  # a visible difference between the classes
    y = np.array([0] * 4 + [1] * 4)
    pipe = Pipeline([
        ("feat", ConvFeatureExtractor(weights=None, random_state=0, image_size=48, pooling="avg")),
        ("clf", LogisticRegression()),
    ])
    search = GridSearchCV(
        pipe, {"feat__backbone": ["vgg16", "resnet50", "efficientnetv2b0"]}, cv=2
    ).fit(X, y)
    assert [params["feat__backbone"] for params in search.cv_results_["params"]] == [
        "vgg16", "resnet50", "efficientnetv2b0"
    ]
    assert search.best_estimator_.named_steps["feat"].layer_


# -- a model of one's own


def own_model(sequential=False):
    import keras

    if sequential:
        return keras.Sequential([
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="p1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            keras.layers.MaxPooling2D(name="p2"),
        ])
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    shortcut = x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="block1_dw")(x)
    x = keras.layers.Conv2D(8, 1, name="block1_pw")(x)
    x = keras.layers.Add(name="block1_add")([x, shortcut])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block2_conv")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    return keras.Model(inputs, x, name="mine")


@pytest.mark.parametrize("sequential", [False, True])
def test_a_model_of_ones_own_runs_the_matrix(sequential, tmp_path):
    model = own_model(sequential)
    X = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1] * 3)
    params = dict(backbone=model, image_size=32)
    fitted = ConvFeatureExtractor(layer=2, **params).fit(X)
    assert fitted.layer_ == ("p2" if sequential else "block2_relu")
    assert fitted.preprocessing_ == "none"
    assert fitted.feature_map_shape_ == (8, 8, 16)
    stage1 = ConvFeatureExtractor(layer=1, **params).fit(X)
    # Without block names each layer is a block: c2 is the last one downsampled 2×.
    assert stage1.layer_ == ("c2" if sequential else "block1_add")
    expected = fitted.transform(X)
    # The model travels as .keras bytes; the copy counts as the fitted backbone.
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(X), expected)
    assert restored.backbone is not model and restored.backbone.count_params() == model.count_params()
    cached = ConvFeatureExtractor(layer=2, memory=tmp_path, **params).fit(X)
    np.testing.assert_array_equal(cached.transform(X), cached.transform(X))
    np.testing.assert_allclose(cached.transform(X), expected, rtol=1e-5, atol=1e-7)
    assert clone(fitted).get_params()["backbone"] is not model  # deep-copied, as sklearn does
    first_conv = "c1" if sequential else "stem"
    assert count_flops(2, 32, backbone=model) > count_flops(first_conv, 32, backbone=model)
    pipe = Pipeline([("feat", ConvFeatureExtractor(pooling="avg", **params)),
                     ("clf", LogisticRegression())]).fit(X, y)
    assert cam(pipe, X[:2]).shape == (2, 32, 32)
    tuner = FineTuner(backbone=model, weights=None, random_state=0, image_size=32,
                      unfreeze=1, head_epochs=1, fine_tune_epochs=1, batch_size=3,
                      hidden_units=4).fit(X, y)
    assert tuner.predict_proba(X).shape == (6, 2)


def test_a_model_changed_after_fit_needs_a_new_fit():
    X = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    fitted = ConvFeatureExtractor(backbone=own_model(), image_size=32).fit(X)
    fitted.set_params(backbone=own_model())
    with pytest.raises(ValueError, match=r"\['backbone'\] .*changed after fit"):
        fitted.transform(X)


# -- errors


def test_an_unknown_backbone_names_the_closest():
    X = images_for("ResNet50", 1)
    with pytest.raises(ValueError, match=r"Got 'effnetb0' instead.*Did you mean 'EfficientNetB0'"):
        ConvFeatureExtractor(backbone="effnetb0", weights=None).fit(X)


def test_an_image_too_small_for_the_cut():
    X = images_for("InceptionV3", 1)  # 'valid' convolutions: 75 px at least
    with pytest.raises(ValueError, match=r"`image_size` must be at least \(75, 75\) .* of InceptionV3"):
        ConvFeatureExtractor(backbone="inceptionv3", weights=None, image_size=32).fit(X)


def test_a_weights_file_of_another_network_names_both(tmp_path):
    path = tmp_path / "vgg.weights.h5"
    get_base(WeightsSource("random", seed=1)).model.save_weights(path)
    X = images_for("ResNet50", 1)
    with pytest.raises(ValueError, match=r"does not fit the ResNet50 .*those of the VGG16 base"):
        ConvFeatureExtractor(backbone="resnet50", weights=str(path)).fit(X)


def test_unfreeze_beyond_the_stages():
    X = images_for("ConvNeXtTiny", 2)
    with pytest.raises(ValueError, match=r"`unfreeze` must be at most 4, the number of stages of ConvNeXtTiny"):
        FineTuner(backbone="convnexttiny", weights=None, unfreeze=5, image_size=64).fit(X, [0, 1])


def test_native_size_when_image_size_is_none():
    X = images_for("MobileNetV3Small", 1)
    fitted = ConvFeatureExtractor(backbone="mobilenetv3small", weights=None, image_size=None).fit(X)
    assert fitted.image_size_ == (224, 224)
    assert count_flops(5, 224, backbone="mobilenetv3small") < count_flops(5, 224)


def test_an_extractor_of_ones_own_model_saves_and_loads(tmp_path):
    from sklearn_convfeat import load, save

    X = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    fitted = ConvFeatureExtractor(backbone=own_model(), image_size=32, layer=1).fit(X)
    path = tmp_path / "extractor.skops"
    save(fitted, path)
    np.testing.assert_array_equal(load(path).transform(X), fitted.transform(X))
