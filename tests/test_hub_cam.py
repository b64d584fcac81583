"""cam() on pipelines whose extractor is a keras-hub vision transformer: the maps are
the patch tokens laid out on the patch grid, class and register tokens left out."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

pytest.importorskip("keras_hub", reason="keras-hub backbones need the hub extra")

from sklearn_convfeat import ConvFeatureExtractor, KerasMLPClassifier, cam  # noqa: E402
from sklearn_convfeat._cam._adapters import make_adapter  # noqa: E402

METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam",
           "scorecam", "ablationcam")


def _pipeline(preset, images, pooling, head=None, **params):
    return Pipeline([
        ("feat", ConvFeatureExtractor(backbone=preset, image_size=None, pooling=pooling, **params)),
        ("clf", head or LogisticRegression()),
    ]).fit(images, [0, 1, 1, 0, 1, 0])


def test_maps_are_the_patch_grid_and_gradients_reach_them(presets, pixels):
    pipe = _pipeline(presets["dinov2"], pixels, "avg")
    adapter = make_adapter(pipe, "final_norm")
    maps, grads, _, targets = adapter.gradients(_resized(pixels[:3]), np.full(3, -1))
    tokens = ConvFeatureExtractor(
        backbone=presets["dinov2"], image_size=None, pooling="flatten"
    ).fit(pixels).transform(pixels[:3])
    # 56 px, patch 14: a 4 x 4 grid of 64-wide patch tokens (1 class + 4 registers aside).
    assert maps.shape == grads.shape == (3, 4, 4, 64)
    np.testing.assert_allclose(maps.reshape(3, -1), tokens, rtol=1e-5, atol=1e-5)
    # avg pooling into a linear model: d score / d token = coef / 16 at every patch.
    sign = np.where(targets == 1, 1.0, -1.0)[:, None, None, None]
    expected = sign * np.broadcast_to(pipe[-1].coef_[0] / 16, maps.shape)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-7)


def _resized(images):
    from sklearn_convfeat._images import check_images

    return check_images(images).take(slice(None), (56, 56)).astype(np.float32)


def test_the_default_layer_is_the_input_of_the_last_block(presets, pixels):
    pipe = _pipeline(presets["vit"], pixels, "cls")
    assert make_adapter(pipe, None).layer == "block_2"  # ViT of 3 blocks, cut at 5
    pipe = _pipeline(presets["vit"], pixels, "cls", layer=1)
    assert make_adapter(pipe, None).layer == "embeddings"
    with pytest.raises(ValueError, match="`layer` must output the tokens of the extractor's transformer .* Got 'block_3'"):
        make_adapter(_pipeline(presets["vit"], pixels, "cls", layer=2), "block_3")


@pytest.mark.parametrize("family, pooling", [
    ("dinov2", "cls+avg"),
    pytest.param("clip", "embedding", marks=pytest.mark.slow),
    pytest.param("siglip", "avg", marks=pytest.mark.slow),
])
def test_every_method_gives_heatmaps_for_transformers(presets, pixels, family, pooling):
    pipe = _pipeline(presets[family], pixels, pooling)
    for method in METHODS:
        heatmaps = cam(pipe, pixels[:2], method=method)
        assert heatmaps.shape == (2, 40, 40)
        assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_a_keras_mlp_head(presets, pixels):
    head = KerasMLPClassifier(hidden_units=8, epochs=2, random_state=0)
    pipe = _pipeline(presets["dinov2"], pixels, "cls", head=head)
    heatmaps = cam(pipe, pixels[:2])
    assert heatmaps.shape == (2, 40, 40) and np.isfinite(heatmaps).all()
