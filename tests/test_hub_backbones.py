"""keras-hub vision transformers as backbones, through tiny random presets that
keras-hub itself saves into a temporary folder (offline, seconds to build)."""

import importlib.util
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

from conftest import fresh_keras_home, in_fresh_process  # noqa: E402

from sklearn_convfeat import ConvFeatureExtractor, load, save  # noqa: E402
from sklearn_convfeat._backbones._hub_layouts import stage_blocks  # noqa: E402
from sklearn_convfeat._images import check_images  # noqa: E402


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


@pytest.mark.slow
def test_pickle_into_a_fresh_process_clone_and_skops(presets, pixels, tmp_path):
    extractor = _extractor(presets["dinov2"], layer=3, pooling="cls+avg").fit(pixels)
    expected = extractor.transform(pixels)
    fresh = in_fresh_process(extractor, "transform", pixels, tmp_path)
    np.testing.assert_array_equal(fresh, expected)
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


# --- exported backends (ONNX Runtime, OpenVINO, INT8) and Dask -----------------------

EXPORTED = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def hub_keras_home(tmp_path_factory):
    """A fresh KERAS_HOME for the exports of these tests (cluster workers inherit it)."""
    with fresh_keras_home(tmp_path_factory) as folder:
        yield folder


@pytest.fixture(params=EXPORTED)
def exported(request, hub_keras_home):
    pytest.importorskip(request.param)
    if request.param == "onnxruntime":
        pytest.importorskip("tf2onnx")
    return request.param


def _within_export_tolerance(features, reference):
    """The documented parity of exports: within 1e-4 of TensorFlow's, relative."""
    assert features.shape == reference.shape and features.dtype == np.float32
    assert np.abs(features - reference).max() < 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize(
    "family, layer, pooling",
    [("dinov2", 1, "cls+avg"),  # exact GELU: TensorFlow's Erfc, which tf2onnx lacks
     pytest.param("dinov2", 5, "cls+avg", marks=pytest.mark.slow),
     ("vit", 3, "cls"),  # captures its position ids: an extra ONNX input, unfed
     pytest.param("clip", 5, "embedding", marks=pytest.mark.slow),  # quick GELU, projection
     pytest.param("siglip", 5, "embedding", marks=pytest.mark.slow)],  # attention pooling
)
def test_exported_features_equal_tensorflows(exported, presets, pixels, family, layer, pooling):
    params = dict(layer=layer, pooling=pooling)
    reference = _extractor(presets[family], **params).fit(pixels).transform(pixels)
    extractor = _extractor(presets[family], backend=exported, **params).fit(pixels)
    _within_export_tolerance(extractor.transform(pixels), reference)


def test_one_export_per_cut_serves_every_token_pooling(exported, presets, pixels, monkeypatch):
    from sklearn_convfeat import _backends

    made = []
    name = {"onnxruntime": "export_onnx", "openvino": "export_openvino"}[exported]
    real = getattr(_backends, name)
    monkeypatch.setattr(_backends, name, lambda *args: made.append(args[1]) or real(*args))
    # 84 px, a size no other test exports: DINOv2 interpolates its position embeddings.
    for pooling in ("cls", "avg", "cls+avg", "flatten"):
        params = dict(image_size=84, layer=4, pooling=pooling)
        reference = ConvFeatureExtractor(backbone=presets["dinov2"], **params).fit(pixels)
        extractor = ConvFeatureExtractor(backbone=presets["dinov2"], backend=exported, **params)
        _within_export_tolerance(
            extractor.fit(pixels).transform(pixels), reference.transform(pixels)
        )
    assert len(made) == 1 and "block_2-84x84" in os.path.basename(made[0])


def _cosines(features, reference):
    return (features * reference).sum(axis=1) / (
        np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    )


def _centred_correlation(features, reference):
    """Correlation of what differs between images (each feature's mean removed)."""
    return np.corrcoef(
        (features - features.mean(axis=0)).ravel(), (reference - reference.mean(axis=0)).ravel()
    )[0, 1]


@pytest.mark.parametrize(
    "family, layer, pooling",
    [("dinov2", 5, "cls+avg"), pytest.param("clip", 5, "embedding", marks=pytest.mark.slow),
     pytest.param("siglip", 3, "avg", marks=pytest.mark.slow)],
)
def test_int8_runs_and_agrees_with_fp32(hub_keras_home, presets, pixels, family, layer, pooling):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    params = dict(layer=layer, pooling=pooling, backend="openvino")
    fp32 = _extractor(presets[family], **params).fit(pixels).transform(pixels)
    extractor = _extractor(presets[family], quantize="int8", **params).fit(pixels)
    features = extractor.transform(pixels)
    assert extractor.n_calibration_images_ == len(pixels)
    assert b"FakeQuantize" in extractor._quantized_ir[0]  # 8-bit, not the FP32 model
    assert not np.array_equal(features, fp32)
    # Over 8 random initialisations of these presets (keras-hub draws new weights each
    # run), every image's INT8 features had a cosine similarity >= 0.9991 with its FP32
    # ones, and the centred correlation was >= 0.9991 (another image's: <= 0.23).
    # Quantized as a plain model rather than a transformer, DINOv2's fell to 0.48.
    assert _cosines(features, fp32).min() > 0.995
    assert _centred_correlation(features, fp32) > 0.99
    assert _centred_correlation(features, fp32[::-1]) < 0.5
    restored = pickle.loads(pickle.dumps(extractor))  # the INT8 model travels with it
    np.testing.assert_array_equal(restored.transform(pixels), features)


@pytest.mark.slow
def test_a_new_process_loads_hub_exports_from_disk(hub_keras_home, presets, pixels, tmp_path):
    backends = [name for name in EXPORTED if importlib.util.find_spec(name)]
    if not backends:
        pytest.skip("neither onnxruntime nor openvino is installed")
    fitted = [
        _extractor(presets["dinov2"], layer=5, pooling="cls+avg", backend=name).fit(pixels)
        for name in backends
    ]
    expected = [extractor.transform(pixels) for extractor in fitted]
    stamps = sorted(os.stat(path).st_mtime_ns for path in hub_keras_home.iterdir())
    script = (
        "import pickle, sys, numpy as np\n"
        "from sklearn_convfeat import _backends\n"
        "def no_export(*args):\n"
        "    raise AssertionError('exported again')\n"
        "_backends.export_onnx = _backends.export_openvino = no_export\n"
        "extractors, X = pickle.load(sys.stdin.buffer)\n"
        f"np.save({str(tmp_path / 'f.npy')!r}, np.stack([e.transform(X) for e in extractors]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], input=pickle.dumps((fitted, pixels)),
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), np.stack(expected))
    assert sorted(os.stat(path).st_mtime_ns for path in hub_keras_home.iterdir()) == stamps


def test_dask_needs_the_preset_folder_on_every_worker(presets, pixels, tmp_path):
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    from sklearn_convfeat import _backbone
    from sklearn_convfeat._backbones import _keras_hub
    from sklearn_convfeat.dask import transform, upload_weights

    folder = shutil.copytree(presets["vit"], tmp_path / "vit")
    extractor = _extractor(str(folder), pooling="cls").fit(pixels)
    for fitted in (extractor, _extractor(str(folder), weights=None, pooling="cls").fit(pixels)):
        with pytest.raises(ValueError, match=r"rebuilt from '.*vit', which upload_weights "
                           r"does not ship.*every worker mounts at that path"):
            upload_weights(None, fitted)
    # A built Backbone travels in the pickle: nothing to upload.
    backbone = keras_hub.models.Backbone.from_preset(presets["vit"])
    assert upload_weights(None, _extractor(backbone, pooling="cls").fit(pixels)) is None

    folder.rename(tmp_path / "elsewhere")  # as if this machine did not see it
    X = da.from_array(pixels, chunks=(3, -1, -1, -1))
    with pytest.raises(FileNotFoundError, match=r"rebuilt from '.*vit', which is not on this "
                       r"machine\. Put it on a file system every worker mounts"):
        transform(extractor, X).compute(scheduler="synchronous")
    # Outside Dask too: a process that never read the folder says which one it needs.
    data = pickle.dumps(extractor)
    _keras_hub._PRESETS.clear()
    _backbone.clear_cache()
    with pytest.raises(FileNotFoundError, match=r"preset folder '.*vit' this estimator was "
                       r"fitted with is not on this machine"):
        pickle.loads(data).transform(pixels)


@pytest.mark.slow
def test_hub_extractors_on_a_cluster(hub_keras_home, presets, pixels, tmp_path):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    from sklearn_convfeat.dask import transform

    folder = shutil.copytree(presets["dinov2"], tmp_path / "dinov2")  # new to the worker
    backbone = keras_hub.models.Backbone.from_preset(presets["clip"])
    extractors = [
        _extractor(str(folder), layer=3, pooling="cls+avg"),
        ConvFeatureExtractor(backbone=backbone, image_size=32, pooling="embedding"),
    ]
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        extractors.append(
            _extractor(str(folder), pooling="avg", backend="openvino", quantize="int8")
        )
    extractors = [extractor.fit(pixels) for extractor in extractors]
    X = da.from_array(pixels, chunks=(3, -1, -1, -1))
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="3GiB",
    )
    with cluster, distributed.Client(cluster):
        for extractor in extractors:
            np.testing.assert_allclose(
                transform(extractor, X).compute(), extractor.transform(pixels),
                rtol=1e-5, atol=1e-6,
            )
        folder.rename(tmp_path / "elsewhere")  # as if the worker did not share it
        with pytest.raises(FileNotFoundError, match=r"rebuilt from '.*dinov2', which is "
                           r"not on worker tcp://127\.0\.0\.1"):
            transform(extractors[0], X).compute()


def test_a_base_too_large_for_one_onnx_file_is_refused_before_exporting(
    hub_keras_home, presets, pixels, monkeypatch
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from sklearn_convfeat import _backends

    def no_export(*args):
        raise AssertionError("exported")

    monkeypatch.setattr(_backends, "export_onnx", no_export)
    # As dinov2_giant (about 4 GiB of weights) meets the 2 GiB limit, this tiny one meets 1 KiB.
    monkeypatch.setattr(_backends, "ONNX_MAX_BYTES", 1024)
    with pytest.raises(ValueError, match=r"backend='onnxruntime' cannot run the keras-hub DINOv2 "
                       r"preset '.*' cut at 'final_norm': its 0.00 GiB of weights exceed the "
                       r".* GiB an ONNX file holds.*Use backend='openvino'"):
        ConvFeatureExtractor(  # a size no other test exports: no file to load instead
            backbone=presets["dinov2"], image_size=98, pooling="cls", backend="onnxruntime"
        ).fit(pixels)
