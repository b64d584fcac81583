import numpy as np
import pytest

from sklearn_convfeat._architectures import preprocess
from sklearn_convfeat._backbone import count_flops, get_base, get_forward
from sklearn_convfeat._weights import WeightsSource

SOURCE = WeightsSource("random", seed=0)
VGG16_LAYERS = (
    "block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2",
    "block2_pool", "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_pool", "block5_conv1",
    "block5_conv2", "block5_conv3", "block5_pool",
)


def test_stage_numbers_mean_pooling_layers():
    entry = get_base(SOURCE)
    assert [entry.resolve_layer(n) for n in range(1, 6)] == [
        f"block{n}_pool" for n in range(1, 6)
    ]
    assert entry.resolve_layer("block4_conv2") == "block4_conv2"


def test_layer_list_matches_keras_vgg16():
    assert tuple(get_base(SOURCE).graph.names) == VGG16_LAYERS
    assert get_base(SOURCE).graph.cut_points == set(VGG16_LAYERS)


@pytest.mark.parametrize("layer", ["block1_conv1", "block2_pool", "block3_conv3", "block4_pool", "block5_pool"])
@pytest.mark.parametrize("image_size", [(32, 32), (37, 45)])
def test_feature_map_shape_matches_the_model(layer, image_size):
    forward = get_forward(SOURCE, layer, "vgg16", "flatten")
    features = forward(np.zeros((1, *image_size, 3), dtype=np.float32))
    shape = get_base(SOURCE).map_shape(layer, image_size)
    assert features.shape == (1, int(np.prod(shape)))


def test_book_feature_count_and_minimum_sizes():
    entry = get_base(SOURCE)
    assert entry.map_shape("block5_pool", (150, 150)) == (4, 4, 512)  # 8192 features
    assert entry._smallest_size("block5_pool") == 32
    assert entry._smallest_size("block3_pool") == 8
    assert entry._smallest_size("block1_conv1") == 1


def test_flop_count_of_the_full_base_at_150():
    # 13.23 GFLOP per 150×150 image, the figure the speed measurements use.
    assert count_flops("block5_pool", (150, 150)) / 1e9 == pytest.approx(13.23, abs=0.01)
    assert count_flops(5, (150, 150)) == count_flops("block5_pool", (150, 150))
    assert count_flops("block3_pool", (150, 150)) < count_flops("block4_pool", (150, 150))


def test_flop_count_matches_the_hand_formula_of_vgg16():
    height = width = 40
    channels, flops = 3, 0
    for name in VGG16_LAYERS:
        if name.endswith("pool"):
            height, width = height // 2, width // 2
            continue
        filters = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[int(name[5])]
        flops += 2 * height * width * 9 * channels * filters
        channels = filters
    assert count_flops(5, (40, 40)) == flops


def test_preprocessing_matches_keras():
    import keras

    x = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(preprocess(x, "vgg16")),
        keras.applications.vgg16.preprocess_input(x.copy()),
    )
    np.testing.assert_allclose(np.asarray(preprocess(x, "rescale")), x / 255.0, rtol=1e-6)


def test_pooling_variants_agree_with_the_flat_feature_map():
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 40, 40, 3)).astype(np.float32)
    flat = get_forward(SOURCE, "block4_pool", "vgg16", "flatten")(x).reshape(2, 2, 2, 512)
    avg = get_forward(SOURCE, "block4_pool", "vgg16", "avg")(x)
    peak = get_forward(SOURCE, "block4_pool", "vgg16", "max")(x)
    np.testing.assert_allclose(avg, flat.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(peak, flat.max(axis=(1, 2)), rtol=1e-6)


def test_forward_functions_and_bases_are_cached():
    assert get_base(SOURCE) is get_base(WeightsSource("random", seed=0))
    assert get_forward(SOURCE, "block3_pool", "vgg16", "avg") is get_forward(
        SOURCE, "block3_pool", "vgg16", "avg"
    )


def test_unknown_layers_and_stages_are_named_with_the_choices():
    entry = get_base(SOURCE)
    with pytest.raises(ValueError, match=r"`layer` must be a stage number .*Got 'blok5_pool'"):
        entry.resolve_layer("blok5_pool")
    with pytest.raises(ValueError, match=r"image_size.*at least \(32, 32\)"):
        entry.check_image_size((16, 16), "block5_pool")
