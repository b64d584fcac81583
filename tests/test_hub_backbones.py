"""keras-hub vision transformers as backbones, through tiny random presets that
keras-hub itself saves into a temporary folder (offline, seconds to build)."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub backbones need the hub extra (keras-hub >= 0.32)"
)

from sklearn_convfeat import ConvFeatureExtractor, FineTuner, cam, load, save  # noqa: E402
from sklearn_convfeat._backbones._hub_layouts import stage_blocks  # noqa: E402
from sklearn_convfeat._images import check_images  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _save(folder, backbone, converter):
    backbone.save_to_preset(str(folder))
    if converter is not None:
        converter.save_to_preset(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """{family: preset folder}: DINOv2 with 4 registers (2 blocks, 64 wide, 56 px),
    CLIP and SigLIP with 2-block vision towers, ViT with 3 blocks (32 px)."""
    from keras_hub.src.models.clip.clip_text_encoder import CLIPTextEncoder
    from keras_hub.src.models.clip.clip_vision_encoder import CLIPVisionEncoder
    from keras_hub.src.models.siglip.siglip_text_encoder import SigLIPTextEncoder
    from keras_hub.src.models.siglip.siglip_vision_encoder import SigLIPVisionEncoder

    root = tmp_path_factory.mktemp("presets")
    tower = dict(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
                 image_shape=(32, 32, 3))
    text = dict(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
                intermediate_dim=64, max_sequence_length=8)
    return {
        "dinov2": _save(
            root / "dinov2",
            keras_hub.models.DINOV2Backbone(
                patch_size=14, num_layers=2, hidden_dim=64, num_heads=2, intermediate_dim=128,
                num_register_tokens=4, image_shape=(56, 56, 3),
                position_embedding_shape=(56, 56, 3),
            ),
            keras_hub.layers.DINOV2ImageConverter(
                image_size=(56, 56), scale=(1 / (255 * STD)).tolist(),
                offset=(-MEAN / STD).tolist(), interpolation="bicubic",
            ),
        ),
        "clip": _save(
            root / "clip",
            keras_hub.models.CLIPBackbone(
                vision_encoder=CLIPVisionEncoder(**tower),
                text_encoder=CLIPTextEncoder(**text), projection_dim=16,
            ),
            keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=0.0146, offset=-1.79),
        ),
        "siglip": _save(
            root / "siglip",
            keras_hub.models.SigLIPBackbone(
                vision_encoder=SigLIPVisionEncoder(**tower),
                text_encoder=SigLIPTextEncoder(**text),
            ),
            keras_hub.layers.SigLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1),
        ),
        "vit": _save(
            root / "vit",
            keras_hub.models.ViTBackbone(
                image_shape=(32, 32, 3), patch_size=8, num_layers=3, num_heads=2,
                hidden_dim=32, mlp_dim=64,
            ),
            None,
        ),
    }


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(6, 40, 40, 3), dtype=np.uint8)


def _extractor(preset, **params):
    return ConvFeatureExtractor(backbone=preset, image_size=None, **params)


def _converted(preset, pixels, size):
    """The images resized as the package does, then the preset's own converter
    scale and offset (its resize aside), as keras-hub's forward takes them."""
    images = check_images(pixels).take(slice(None), size).astype("float32")
    converter_file = os.path.join(preset, "image_converter.json")
    if os.path.isfile(converter_file):
        config = json.load(open(converter_file))["config"]
        scale, offset = np.float32(config["scale"]), np.float32(config["offset"])
    else:  # ViT without a converter: the family's [-1, 1]
        scale, offset = np.float32(1 / 127.5), np.float32(-1)
    return images * scale + offset


def test_stage_n_ends_after_block_round_n_d_over_5():
    assert stage_blocks(12) == [2, 5, 7, 10]
    assert stage_blocks(24) == [5, 10, 14, 19]
    assert stage_blocks(2) == [1, 1, 1, 2]  # never before block 1; stages may coincide
    assert stage_blocks(1) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    "family, layer, expected",
    [("dinov2", 1, "block_1"), ("dinov2", 4, "block_2"), ("dinov2", 5, "final_norm"),
     ("vit", 3, "block_2"), ("vit", "block_3", "block_3"), ("clip", 5, "final_norm")],
)
def test_layer_numbers_are_stages_of_blocks(presets, pixels, family, layer, expected):
    extractor = _extractor(presets[family], layer=layer, pooling="avg").fit(pixels)
    assert extractor.layer_ == expected


def test_every_token_pooling_at_every_stage(presets, pixels):
    # DINOv2 at 56 px, patch 14: 16 patches after 1 class and 4 register tokens.
    shapes = {"cls": 64, "avg": 64, "cls+avg": 128, "flatten": 16 * 64}
    for pooling, n_features in shapes.items():
        for layer in (1, 2, 3, 4, 5):
            extractor = _extractor(presets["dinov2"], layer=layer, pooling=pooling).fit(pixels)
            features = extractor.transform(pixels)
            assert extractor.feature_map_shape_ == (21, 64)
            assert features.shape == (6, n_features) == (6, extractor.n_features_out_)
            assert len(extractor.get_feature_names_out()) == n_features
            assert np.isfinite(features).all()


def test_poolings_read_the_right_tokens(presets, pixels):
    """cls is token 0, avg the mean of the patch tokens only (registers left out)."""
    backbone = keras_hub.models.Backbone.from_preset(presets["dinov2"])
    tokens = np.asarray(backbone({"images": _converted(presets["dinov2"], pixels, (56, 56))}))
    features = {
        pooling: _extractor(presets["dinov2"], pooling=pooling).fit(pixels).transform(pixels)
        for pooling in ("cls", "avg", "cls+avg", "flatten")
    }
    np.testing.assert_array_equal(features["cls"], tokens[:, 0])
    np.testing.assert_allclose(features["avg"], tokens[:, 5:].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features["cls+avg"], np.hstack([features["cls"], features["avg"]]))
    np.testing.assert_array_equal(features["flatten"], tokens[:, 5:].reshape(6, -1))


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_embedding_is_the_models_own_image_embedding(presets, pixels, family):
    extractor = _extractor(presets[family], pooling="embedding").fit(pixels)
    backbone = keras_hub.models.Backbone.from_preset(presets[family])
    expected = np.asarray(backbone.get_vision_embeddings(_converted(presets[family], pixels, (32, 32))))
    assert extractor.layer_ == "image_embedding"
    np.testing.assert_allclose(extractor.transform(pixels), expected, rtol=1e-5, atol=1e-5)


def test_vit_class_token_matches_keras_hubs_forward(presets, pixels):
    backbone = keras_hub.models.Backbone.from_preset(presets["vit"])
    expected = np.asarray(backbone(_converted(presets["vit"], pixels, (32, 32))))[:, 0]
    features = _extractor(presets["vit"], pooling="cls").fit(pixels).transform(pixels)
    np.testing.assert_array_equal(features, expected)


def test_other_sizes_interpolate_position_embeddings_as_keras_hub(presets, pixels):
    extractor = ConvFeatureExtractor(
        backbone=presets["dinov2"], image_size=84, pooling="cls"
    ).fit(pixels)
    backbone = keras_hub.models.Backbone.from_preset(presets["dinov2"], image_shape=(84, 84, 3))
    expected = np.asarray(backbone({"images": _converted(presets["dinov2"], pixels, (84, 84))}))
    assert extractor.feature_map_shape_ == (1 + 4 + 36, 64)
    np.testing.assert_array_equal(extractor.transform(pixels), expected[:, 0])


def test_cache_hit_equals_miss_and_resumes_from_any_stage(
    presets, pixels, tmp_path, segment_calls, empty_ram_cache
):
    plain = {
        layer: _extractor(presets["vit"], layer=layer, pooling="cls+avg").fit(pixels).transform(pixels)
        for layer in (5, 3, 1)
    }
    segment_calls.clear()
    for layer, expected in plain.items():  # deepest first: later ones resume
        for _ in ("miss", "hit"):
            cached = _extractor(
                presets["vit"], layer=layer, pooling="cls+avg", memory=str(tmp_path)
            ).fit(pixels)
            np.testing.assert_array_equal(cached.transform(pixels), expected)
    # One pass over the pixels; every stage end was kept on the way.
    assert [call for call in segment_calls if call[0] is None] == [(None, "final_norm", 6)]
    assert len(segment_calls) == 1


def test_grid_search_over_layer_runs_the_base_once_per_image(
    presets, pixels, tmp_path, segment_calls, empty_ram_cache
):
    pipe = Pipeline([
        ("feat", _extractor(presets["dinov2"], pooling="avg", memory=str(tmp_path))),
        ("clf", LogisticRegression()),
    ])
    search = GridSearchCV(pipe, {"feat__layer": [5, 3, 1]}, cv=2).fit(pixels, [0, 1] * 3)
    from_pixels = [call for call in segment_calls if call[0] is None]
    assert sum(n for _, _, n in from_pixels) == len(pixels)
    assert search.best_params_["feat__layer"] in (5, 3, 1)


def test_pickle_into_a_fresh_process_clone_and_skops(presets, pixels, tmp_path):
    extractor = _extractor(presets["dinov2"], layer=3, pooling="cls+avg").fit(pixels)
    expected = extractor.transform(pixels)
    np.save(tmp_path / "x.npy", pixels)
    script = (
        "import pickle, sys, numpy as np; e = pickle.load(sys.stdin.buffer); "
        f"np.save({str(tmp_path / 'f.npy')!r}, e.transform(np.load({str(tmp_path / 'x.npy')!r})))"
    )
    run = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(extractor),
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), expected)
    assert clone(extractor).get_params()["backbone"] == presets["dinov2"]
    pipe = Pipeline([("feat", clone(extractor)), ("clf", LogisticRegression())])
    pipe.fit(pixels, [0, 1] * 3)
    save(pipe, tmp_path / "pipe.skops")
    np.testing.assert_array_equal(
        load(tmp_path / "pipe.skops").predict_proba(pixels), pipe.predict_proba(pixels)
    )


def test_a_preset_whose_configuration_changed_is_refused_after_loading(
    presets, pixels, tmp_path
):
    folder = shutil.copytree(presets["vit"], tmp_path / "vit")
    extractor = _extractor(str(folder), pooling="cls").fit(pixels)
    data = pickle.dumps(extractor)
    config = json.load(open(folder / "config.json"))
    config["config"]["num_heads"] = 4
    json.dump(config, open(folder / "config.json", "w"))
    from sklearn_convfeat._backbones import _keras_hub

    _keras_hub._PRESETS.clear()  # as in a fresh process
    from sklearn_convfeat import _backbone

    _backbone.clear_cache()
    with pytest.raises(ValueError, match="changed since this estimator was fitted"):
        pickle.loads(data).transform(pixels)


def test_a_built_backbone_object(presets, pixels):
    backbone = keras_hub.models.Backbone.from_preset(presets["dinov2"])
    extractor = ConvFeatureExtractor(backbone=backbone, image_size=56, pooling="cls").fit(pixels)
    copy = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(copy.transform(pixels), extractor.transform(pixels))
    # Without a converter the family's normalisation (ImageNet mean and std) applies.
    from_folder = _extractor(presets["dinov2"], pooling="cls").fit(pixels).transform(pixels)
    np.testing.assert_allclose(extractor.transform(pixels), from_folder, rtol=1e-5, atol=1e-5)


def test_random_weights_follow_random_state(presets, pixels):
    first, second, other = (
        _extractor(presets["vit"], weights=None, random_state=seed, pooling="cls")
        .fit(pixels).transform(pixels)
        for seed in (0, 0, 1)
    )
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


@pytest.mark.parametrize(
    "family, params, match",
    [
        ("dinov2", {"pooling": "max"}, "pooling` must be one of 'cls', 'avg'.*Got pooling='max'"),
        ("dinov2", {"pooling": "embedding"}, "DINOv2 preset .* has none. Use pooling='cls'"),
        ("clip", {"pooling": "embedding", "layer": 3}, "`layer` must be 5. Got layer='block_1'"),
        ("siglip", {"pooling": "cls"}, "needs a class token, and .*SigLIP"),
        ("dinov2", {"image_size": 60}, "multiple of the patch size 14.*Got image_size=\\(60, 60\\)"),
        ("dinov2", {"image_size": (56, 84)}, "must be square"),
        ("clip", {"image_size": 64}, "must be \\(32, 32\\) \\(or None\\).*Got image_size=\\(64, 64\\)"),
        ("vit", {"layer": "image_converter", "pooling": "avg"}, "`layer` must output tokens"),
    ],
)
def test_clear_errors(presets, pixels, family, params, match):
    params = {"image_size": None, **params}
    with pytest.raises(ValueError, match=match):
        ConvFeatureExtractor(backbone=presets[family], **params).fit(pixels)


def test_token_pooling_on_a_convnet_is_refused(pixels):
    with pytest.raises(ValueError, match="for VGG16, whose cuts output feature maps. Got pooling='cls'"):
        ConvFeatureExtractor(weights=None, image_size=32, pooling="cls").fit(pixels)


def test_bad_preset_folders(presets, pixels, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is not a keras-hub preset: it has no config.json"):
        _extractor(str(empty)).fit(pixels)
    no_weights = shutil.copytree(presets["vit"], tmp_path / "no_weights")
    os.remove(no_weights / "model.weights.h5")
    with pytest.raises(ValueError, match="has no model.weights.h5"):
        _extractor(str(no_weights)).fit(pixels)
    for class_name, match in [("ResNetBackbone", "not a supported vision backbone"),
                              ("NoSuchBackbone", "a class keras-hub .* lacks")]:
        folder = shutil.copytree(presets["vit"], tmp_path / class_name)
        config = json.load(open(folder / "config.json"))
        config["class_name"] = class_name
        json.dump(config, open(folder / "config.json", "w"))
        with pytest.raises(ValueError, match=match):
            _extractor(str(folder)).fit(pixels)
    mismatched = shutil.copytree(presets["vit"], tmp_path / "mismatched")
    shutil.copy(os.path.join(presets["clip"], "model.weights.h5"), mismatched / "model.weights.h5")
    with pytest.raises(ValueError, match="does not fit its config.json"):
        _extractor(str(mismatched), pooling="cls").fit(pixels)


def test_unknown_preset_names_list_the_closest():
    with pytest.raises(ValueError, match="Closest presets: dinov2_small"):
        ConvFeatureExtractor(backbone="dinov2_smal").fit(np.zeros((2, 8, 8, 3)))


def test_without_keras_hub_a_preset_names_the_extra(monkeypatch, pixels):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub fails
    with pytest.raises(ImportError, match=r'pip install "sklearn-convfeat\[hub\]"'):
        ConvFeatureExtractor(backbone="dinov2_small").fit(pixels)


def test_finetuner_and_cam_refuse_transformers_clearly(presets, pixels):
    with pytest.raises(ValueError, match="must be a convnet for FineTuner: .*vision transformer"):
        FineTuner(backbone=presets["vit"], image_size=None).fit(pixels, [0, 1] * 3)
    pipe = Pipeline([
        ("feat", _extractor(presets["vit"], pooling="cls")), ("clf", LogisticRegression())
    ]).fit(pixels, [0, 1] * 3)
    with pytest.raises(ValueError, match="must have a convolutional base for cam\\(\\)"):
        cam(pipe, pixels[:1])


def test_cli_extract_with_a_preset_folder(presets, tmp_path):
    from conftest import make_image_folder

    from sklearn_convfeat.cli import main

    make_image_folder(tmp_path / "data")
    out = tmp_path / "features.npy"
    code = main([
        "extract", str(tmp_path / "data"), "-o", str(out), "--backbone", presets["dinov2"],
        "--image-size", "native", "--pooling", "cls+avg", "--layer", "3", "--quiet",
    ])
    assert code == 0
    assert np.load(out).shape == (6, 128)
