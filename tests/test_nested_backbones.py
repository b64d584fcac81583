"""A backbone of one's own that calls another model, or has several outputs.

Nested models are laid out as one graph of layers (``_nested.flatten_model``): stages,
the cache, persistence, fine-tuning and CAM all reach the layers inside them. A tiny
MobileNetV2 (alpha 0.35, random weights, 32×32 images) stands in for the network.
"""

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_convfeat import (
    ConvFeatureExtractor,
    FineTuner,
    cam,
    count_flops,
    load,
    save,
)

X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
Y = np.array([0, 1, 0, 1])


@pytest.fixture(scope="session")
def nested_models():
    """{"functional": …, "sequential": …}: MobileNetV2 between a Rescaling and a conv."""
    import keras

    def mobilenet(shape):
        return keras.applications.MobileNetV2(
            input_shape=shape, alpha=0.35, include_top=False, weights=None
        )

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = mobilenet((None, None, 3))(x, training=False)  # as Keras' transfer-learning guide
    functional = keras.Model(inputs, keras.layers.Conv2D(8, 1, name="head")(x), name="mine")
    sequential = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        mobilenet((32, 32, 3)),
        keras.layers.Conv2D(8, 1),
    ])
    return {"functional": functional, "sequential": sequential}


def inner_model(model):
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def keras_maps(model, layer):
    """What Keras itself computes at ``layer`` of the nested MobileNetV2 (or the end)."""
    import keras

    images = X.astype("float32")
    if layer is None:
        return np.asarray(model(images, training=False))
    inner = inner_model(model)
    cut = keras.Model(inner.input, inner.get_layer(layer).output)
    return np.asarray(cut(images / 255, training=False))


@pytest.mark.parametrize("form", ["functional", "sequential"])
def test_a_nested_network_extracts_at_every_stage(nested_models, form):
    model = nested_models[form]
    layers = {}
    for stage in range(1, 6):
        fitted = ConvFeatureExtractor(backbone=model, image_size=32, layer=stage).fit(X)
        layers[stage] = fitted.layer_
        features = fitted.transform(X)
        assert features.shape == (len(X), int(np.prod(fitted.feature_map_shape_)))
        inner = None if stage == 5 else fitted.layer_
        np.testing.assert_allclose(
            features, keras_maps(model, inner).reshape(len(X), -1), rtol=1e-4, atol=1e-5
        )
    # Stages 1-4 end inside MobileNetV2, under its own layer names.
    assert layers[2] == "block_2_add" and layers[4] == "block_12_add"
    assert layers[5] == ("head" if form == "functional" else model.layers[-1].name)


@pytest.mark.parametrize("form", ["functional", "sequential"])
def test_a_nested_network_caches_pickles_and_saves(nested_models, form, tmp_path):
    params = dict(backbone=nested_models[form], image_size=32, layer=3, pooling="avg")
    fitted = ConvFeatureExtractor(**params).fit(X)
    expected = fitted.transform(X)
    cached = ConvFeatureExtractor(memory=tmp_path / "cache", **params).fit(X)
    miss = cached.transform(X)
    np.testing.assert_array_equal(cached.transform(X), miss)  # a hit: what the miss computed
    np.testing.assert_allclose(miss, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).transform(X), expected)
    save(fitted, tmp_path / "extractor.skops")
    restored = load(tmp_path / "extractor.skops")
    assert restored.layer_ == fitted.layer_ == "block_5_add"
    np.testing.assert_array_equal(restored.transform(X), expected)


def test_cam_reaches_a_layer_inside_the_nested_network(nested_models):
    pipe = Pipeline([
        ("feat", ConvFeatureExtractor(backbone=nested_models["functional"], image_size=32,
                                      pooling="avg")),
        ("clf", LogisticRegression()),
    ]).fit(X, Y)
    heatmaps = cam(pipe, X[:2], layer="block_13_expand")
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()


@pytest.mark.slow
def test_a_nested_network_fine_tunes_and_explains(nested_models):
    tuner = FineTuner(
        backbone=nested_models["sequential"], weights=None, random_state=0, image_size=32,
        unfreeze=1, head_epochs=1, fine_tune_epochs=1, batch_size=2, hidden_units=4,
    ).fit(X, Y)
    assert tuner.predict_proba(X).shape == (len(X), 2)
    assert len(tuner.history_["phase"]) == 2
    assert cam(tuner, X[:1], layer="block_13_expand").shape == (1, 32, 32)


# -- small nested models


def test_the_model_calling_a_model_from_the_issue():
    import keras

    from sklearn_convfeat._architectures import own_model_identity

    i0 = keras.Input((None, None, 3))
    inner = keras.Model(i0, keras.layers.Conv2D(4, 3)(i0))
    i = keras.Input((None, None, 3))
    outer = keras.Model(i, inner(i))
    features = ConvFeatureExtractor(backbone=outer, image_size=32).fit(X).transform(X)
    expected = np.asarray(outer(X.astype("float32"))).reshape(len(X), -1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert own_model_identity(outer)[0] == own_model_identity(outer)[0]


def test_a_nested_layer_whose_name_is_taken_gets_the_model_prefix():
    import keras

    i0 = keras.Input((None, None, 3))
    inner = keras.Model(i0, keras.layers.Conv2D(4, 3, name="conv")(i0), name="inner")
    i = keras.Input((None, None, 3))
    outer = keras.Model(i, keras.layers.Conv2D(6, 3, strides=2, name="conv")(inner(i)))
    inside = ConvFeatureExtractor(backbone=outer, image_size=32, layer="inner_conv").fit(X)
    assert inside.feature_map_shape_ == (30, 30, 4)
    end = ConvFeatureExtractor(backbone=outer, image_size=32, layer="conv").fit(X)
    assert end.feature_map_shape_ == (14, 14, 6)
    with pytest.raises(ValueError, match=r"`layer` must be .* Got 'inner' instead"):
        ConvFeatureExtractor(backbone=outer, image_size=32, layer="inner").fit(X)


def test_a_nested_model_called_twice_is_refused():
    import keras

    i0 = keras.Input((None, None, 3))
    shared = keras.Model(i0, keras.layers.Conv2D(3, 3, padding="same")(i0), name="shared")
    i = keras.Input((None, None, 3))
    outer = keras.Model(i, shared(shared(i)))
    with pytest.raises(
        ValueError,
        match=r"`backbone` must call each nested model once.* Got a backbone calling its "
              r"nested model 'shared' more than once .*clone_model",
    ):
        ConvFeatureExtractor(backbone=outer, image_size=32).fit(X)


# -- several outputs


@pytest.fixture(scope="module")
def two_outputs():
    import keras

    inputs = keras.Input((None, None, 3))
    trunk = keras.layers.Conv2D(4, 3, padding="same", name="trunk")(inputs)
    return keras.Model(inputs, [
        keras.layers.Conv2D(4, 3, name="o1")(trunk),
        keras.layers.Conv2D(6, 3, strides=2, name="o2")(trunk),
    ])


def test_a_multi_output_backbone_is_cut_where_layer_names(two_outputs):
    fitted = ConvFeatureExtractor(backbone=two_outputs, image_size=32, layer="o2").fit(X)
    assert fitted.layer_ == "o2" and fitted.feature_map_shape_ == (15, 15, 6)
    expected = np.asarray(two_outputs(X.astype("float32"))[1]).reshape(len(X), -1)
    np.testing.assert_allclose(fitted.transform(X), expected, rtol=1e-5, atol=1e-5)
    assert count_flops("o2", 32, backbone=two_outputs) > count_flops("trunk", 32, backbone=two_outputs)


def test_a_multi_output_backbone_refuses_a_stage_number(two_outputs):
    rule = (
        r"`backbone` must have a single output, or `layer` must name the layer to cut "
        r"it at: .* has 2 outputs \('o1', 'o2'\)\. Got layer=5 instead: pass "
        r"layer='o1' or layer='o2'"
    )
    with pytest.raises(ValueError, match=rule):
        ConvFeatureExtractor(backbone=two_outputs, image_size=32).fit(X)
    with pytest.raises(ValueError, match=rule.replace("5", "3")):
        count_flops(3, 32, backbone=two_outputs)


def test_fine_tuning_a_multi_output_backbone_is_refused(two_outputs):
    with pytest.raises(
        ValueError,
        match=r"`backbone` must have a single output for FineTuner.*2 outputs "
              r"\('o1', 'o2'\)\. Pass keras\.Model\(backbone\.input, "
              r"backbone\.get_layer\(name\)\.output\)",
    ):
        FineTuner(backbone=two_outputs, image_size=32, head_epochs=1).fit(X, Y)


def test_nested_names_that_clash_once_prefixed_are_refused():
    import keras

    i0 = keras.Input((None, None, 3))
    inner = keras.Model(i0, keras.layers.Conv2D(4, 3, name="conv")(i0), name="inner")
    i = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(3, 1, name="inner_conv")(i)
    outer = keras.Model(i, inner(keras.layers.Conv2D(3, 1, name="conv")(x)))
    with pytest.raises(
        ValueError,
        match=r"`backbone` must have distinct layer names .*'<nested model>_<layer>'\)\. "
              r"Got \['inner_conv'\] more than once",
    ):
        ConvFeatureExtractor(backbone=outer, image_size=32).fit(X)
