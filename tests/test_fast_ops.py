"""The TensorFlow graph's exact speed-ups: batch norms folded into convolutions."""

import keras
import numpy as np
import pytest

from sklearn_convfeat import ConvFeatureExtractor, _backbone, _fast_ops

RNG = np.random.default_rng(0)


def randomize_statistics(model):
    """Batch-norm statistics far from the identity, so that folding shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(RNG.normal(0, 1, n))
            layer.moving_variance.assign(RNG.uniform(0.5, 2, n))
            if layer.scale:
                layer.gamma.assign(RNG.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(RNG.normal(0, 0.5, n))
    return model


def relative_error(model, other, x):
    a, b = model(x, training=False), other(x, training=False)
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() / np.abs(a).max()


def test_folding_keeps_a_resnet_exact():
    model = randomize_statistics(
        keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    )
    folds = _fast_ops.foldable_batch_norms(model)
    assert len(folds) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
    )
    fast = _fast_ops.with_fast_ops(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in fast.layers)
    x = RNG.uniform(-100, 100, (2, 32, 32, 3)).astype("float32")
    assert relative_error(model, fast, x) < 1e-5


def test_what_can_and_cannot_be_folded():
    inputs = keras.Input((8, 8, 3))
    plain = keras.layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
    plain_bn = keras.layers.BatchNormalization(name="plain_bn")(plain)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                             use_bias=False, name="depthwise")(plain_bn)
    depthwise_bn = keras.layers.BatchNormalization(name="depthwise_bn")(depthwise)
    read_twice = keras.layers.Conv2D(8, 1, name="read_twice")(depthwise_bn)
    read_twice_bn = keras.layers.BatchNormalization(name="read_twice_bn")(read_twice)
    added = keras.layers.Add()([read_twice, read_twice_bn])  # reads the conv too
    activated = keras.layers.Conv2D(8, 1, activation="relu", name="activated")(added)
    activated_bn = keras.layers.BatchNormalization(name="activated_bn")(activated)
    separable = keras.layers.SeparableConv2D(8, 3, depth_multiplier=2, padding="same",
                                             name="separable")(activated_bn)
    separable_bn = keras.layers.BatchNormalization(name="separable_bn")(separable)
    rows = keras.layers.Conv2D(8, 1, name="rows")(separable_bn)
    rows_bn = keras.layers.BatchNormalization(axis=1, name="rows_bn")(rows)
    output = keras.layers.Conv2D(8, 1, name="output")(rows_bn)
    output_bn = keras.layers.BatchNormalization(name="output_bn")(output)
    model = randomize_statistics(keras.Model(inputs, [output, output_bn]))

    folds = _fast_ops.foldable_batch_norms(model)
    assert {bn.name: conv.name for bn, conv in folds.items()} == {
        "plain_bn": "plain", "depthwise_bn": "depthwise", "separable_bn": "separable",
    }
    x = RNG.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    fast = _fast_ops.with_fast_ops(model)
    for reference, folded in zip(model(x, training=False), fast(x, training=False)):
        reference, folded = np.asarray(reference), np.asarray(folded)
        assert np.abs(reference - folded).max() / np.abs(reference).max() < 1e-5


def test_every_cut_shares_one_folded_copy():
    model = randomize_statistics(
        keras.applications.MobileNetV2(weights=None, include_top=False,
                                       input_shape=(32, 32, 3), alpha=0.35)
    )
    first = _fast_ops.with_fast_ops(model)
    cut = keras.Model(model.inputs, model.get_layer("block_3_project_BN").output)
    second = _fast_ops.with_fast_ops(cut)
    assert second.get_layer("block_3_project") is first.get_layer("block_3_project")
    assert second.get_layer("block_3_project") is not model.get_layer("block_3_project")


def test_the_cut_layer_itself_is_never_folded_away():
    model = keras.applications.ResNet50(weights=None, include_top=False,
                                        input_shape=(32, 32, 3))
    cut = keras.Model(model.inputs, model.get_layer("conv1_conv").output)
    assert _fast_ops.foldable_batch_norms(cut) == {}
    assert _fast_ops.with_fast_ops(cut) is cut


@pytest.mark.parametrize(
    "backbone, layer", [("resnet50", 3), ("mobilenetv2", 5), ("xception", 2)]
)
def test_extracted_features_equal_the_unfolded_ones(backbone, layer, monkeypatch):
    X = RNG.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    params = dict(backbone=backbone, weights=None, random_state=0, layer=layer,
                  image_size=(32, 32), pooling="avg", backend="tensorflow")
    folded = ConvFeatureExtractor(**params).fit(X).transform(X)
    monkeypatch.setattr(_fast_ops, "FOLD_BATCH_NORMS", False)
    _backbone.clear_cache()  # the compiled (folded) functions go with the base
    try:
        unfolded = ConvFeatureExtractor(**params).fit(X).transform(X)
    finally:
        _backbone.clear_cache()
    assert np.abs(folded - unfolded).max() / np.abs(unfolded).max() < 1e-5
