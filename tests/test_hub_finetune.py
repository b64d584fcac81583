"""FineTuner and FineTunerRegressor on keras-hub vision transformers: the top stages'
blocks train, the head reads the class and mean patch tokens (or CLIP's and SigLIP's
image embedding), and the fitted network saves, loads and explains."""

import pickle

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub backbones need the hub extra")

from conftest import in_fresh_process  # noqa: E402

from sklearn_convfeat import FineTuner, FineTunerRegressor, cam  # noqa: E402

Y = [0, 1, 1, 0, 1, 0]
SMALL = dict(image_size=None, head_epochs=2, fine_tune_epochs=2, hidden_units=8, random_state=0)


def _trainable(tuner):
    from sklearn_convfeat._finetune_phases import base_of

    return [layer.name for layer in base_of(tuner.model_).layers if layer.trainable_weights]


@pytest.mark.parametrize(
    "family", ["dinov2", *(pytest.param(f, marks=pytest.mark.slow) for f in ("vit", "clip", "siglip"))]
)
def test_unfreeze_trains_the_top_stages_blocks(presets, pixels, family):
    tuner = FineTuner(backbone=presets[family], unfreeze=1, **SMALL).fit(pixels, Y)
    assert tuner.history_["phase"] == [1, 1, 2, 2]
    assert tuner.cache_ == "memory"  # the frozen prefix ran once
    trainable = _trainable(tuner)
    # Stage 5 = the blocks after stage 4's end, and the final norm (and the embedding head).
    assert "final_norm" in trainable and "block_1" not in trainable
    expected = {"dinov2": ("flatten", "TokenPoolingLayer"), "vit": ("flatten", "TokenPoolingLayer"),
                "clip": ("flatten", "Flatten"), "siglip": ("flatten", "Flatten")}[family]
    head_input = tuner.model_.get_layer("flatten")
    assert type(head_input).__name__ == expected[1]
    assert tuner.predict_proba(pixels).shape == (6, 2)


@pytest.mark.slow
def test_every_stage_trains_but_dinov2_position_embeddings(presets, pixels):
    tuner = FineTuner(backbone=presets["dinov2"], unfreeze=5, **SMALL).fit(pixels, Y)
    assert tuner.cache_ is None
    trainable = _trainable(tuner)
    assert "block_1" in trainable and "embeddings" not in trainable
    vit = FineTuner(backbone=presets["vit"], unfreeze=5, **SMALL).fit(pixels, Y)
    assert "embeddings" in _trainable(vit)


@pytest.mark.slow
def test_a_fitted_transformer_tuner_loads_in_a_fresh_process(presets, pixels, tmp_path):
    tuner = FineTuner(backbone=presets["vit"], unfreeze=1, **SMALL).fit(pixels, Y)
    expected = tuner.predict_proba(pixels)
    fresh = in_fresh_process(tuner, "predict_proba", pixels, tmp_path)
    np.testing.assert_array_equal(fresh, expected)


def test_regressor(presets, pixels):
    tuner = FineTunerRegressor(backbone=presets["clip"], unfreeze=1, **SMALL)
    tuner.fit(pixels, np.linspace(0, 1, 6))
    copy = pickle.loads(pickle.dumps(tuner))
    np.testing.assert_array_equal(copy.predict(pixels), tuner.predict(pixels))


def test_cam_of_a_transformer_tuner(presets, pixels):
    from sklearn_convfeat._cam._adapters import make_adapter

    tuner = FineTuner(backbone=presets["dinov2"], unfreeze=1, **SMALL).fit(pixels, Y)
    assert make_adapter(tuner, None).layer == "block_1"  # the input of the last block
    assert make_adapter(tuner, 4).layer == "block_2"  # stage 4 of a 2-block network
    for method in ("gradcam", "scorecam"):
        heatmaps = cam(tuner, pixels[:2], method=method)
        assert heatmaps.shape == (2, 40, 40) and np.isfinite(heatmaps).all()
    with pytest.raises(ValueError, match="must output the tokens of the FineTuner's transformer"):
        cam(tuner, pixels[:1], layer="image_converter")
