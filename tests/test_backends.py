"""ConvFeatureExtractor(backend=..., quantize=...): ONNX Runtime, OpenVINO and INT8.

Each backend's tests skip when its extra is not installed. The base is cut at
block2_pool on 32×32 images so that exports take a second, not the 15 s of the whole
base; every export goes to a temporary KERAS_HOME.
"""

import io
import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from conftest import fresh_keras_home
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from sklearn_convfeat import ConvFeatureExtractor, _backends
from sklearn_convfeat._extractor import weights_source

SMALL = {
    "weights": None, "image_size": (32, 32), "random_state": 0, "layer": "block2_pool",
}
BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # -> module needed
EXPORTERS = {"onnxruntime": "export_onnx", "openvino": "export_openvino"}


def make_images(n, seed=0, size=36):
    """Smooth colour blobs: closer to photos than white noise, so activations vary."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size)
    images = []
    for _ in range(n):
        (row, col), width = rng.uniform(0, 1, 2), rng.uniform(0.1, 0.5)
        colour = rng.uniform(0, 255, 3)
        distance = (grid[:, None] - row) ** 2 + (grid[None, :] - col) ** 2
        blob = np.exp(-distance / width**2)
        noise = rng.normal(0, 12, (size, size, 3))
        images.append(np.clip(blob[..., None] * colour + 40 + noise, 0, 255))
    return np.asarray(images, dtype=np.uint8)


X = make_images(8)
Y = np.array([0, 1] * 4)


@pytest.fixture(scope="module", autouse=True)
def keras_home(tmp_path_factory):
    """A fresh KERAS_HOME for the module's exports; the folder they land in."""
    with fresh_keras_home(tmp_path_factory) as folder:
        yield folder


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    pytest.importorskip(BACKENDS[request.param])
    if request.param == "onnxruntime":
        pytest.importorskip("tf2onnx")
    return request.param


@pytest.fixture
def exports(monkeypatch):
    """Paths of every export made during the test, by backend."""
    made = {name: [] for name in EXPORTERS}
    for name, function in EXPORTERS.items():
        real = getattr(_backends, function)

        def spy(traced, path, real=real, name=name):
            made[name].append(path)
            return real(traced, path)

        monkeypatch.setattr(_backends, function, spy)
    return made


def relative_error(features, reference):
    return np.abs(features - reference).max() / np.abs(reference).max()


@pytest.mark.parametrize(
    "layer, pooling",
    [("block2_pool", "flatten"), ("block2_pool", "avg"), ("block2_pool", "max"),
     ("block1_conv2", "avg")],
)
def test_features_equal_tensorflow_within_1e_4(backend, layer, pooling):
    params = dict(SMALL, layer=layer, pooling=pooling)
    reference = ConvFeatureExtractor(**params).fit(X).transform(X)
    extractor = ConvFeatureExtractor(backend=backend, **params).fit(X)
    features = extractor.transform(X)
    assert features.shape == reference.shape and features.dtype == np.float32
    assert relative_error(features, reference) < 1e-4
    np.testing.assert_allclose(features, reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    assert not hasattr(extractor, "n_calibration_images_")  # FP32 learns nothing


def test_rescale_preprocessing_is_inside_the_export(backend):
    params = dict(SMALL, layer="block1_pool", preprocessing="rescale", pooling="avg")
    reference = ConvFeatureExtractor(**params).fit(X).transform(X)
    features = ConvFeatureExtractor(backend=backend, **params).fit(X).transform(X)
    assert relative_error(features, reference) < 1e-4


def test_export_is_built_once_and_reused(backend, exports, keras_home):
    # An image size no other test uses, so this test's first fit exports.
    params = dict(SMALL, image_size=(40, 40), pooling="avg", backend=backend)
    first = ConvFeatureExtractor(**params).fit(X)
    features = first.transform(X)
    assert len(exports[backend]) == 1
    path = exports[backend][0]
    assert os.path.dirname(path) == str(keras_home)
    assert "block2_pool-40x40-vgg16" in os.path.basename(path)
    stamp = os.stat(path).st_mtime_ns

    # Another extractor, another pooling (pooled in numpy), a clone, a pickle...
    ConvFeatureExtractor(**params).fit(X[:2])
    ConvFeatureExtractor(**{**params, "pooling": "max"}).fit(X)
    clone(first).fit(X)
    restored = pickle.loads(pickle.dumps(first))
    # ... and a process that starts with nothing loaded: the file on disk serves it.
    _backends.clear_cache()
    np.testing.assert_array_equal(restored.transform(X), features)
    ConvFeatureExtractor(**params).fit(X)
    assert len(exports[backend]) == 1
    assert os.stat(path).st_mtime_ns == stamp


@pytest.mark.slow
def test_a_new_process_loads_the_export_from_disk(keras_home):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    fitted = ConvFeatureExtractor(**SMALL, pooling="avg", backend="onnxruntime").fit(X)
    features = fitted.transform(X)
    path = _backends.model_path(
        "onnxruntime", weights_source(fitted), "block2_pool", (32, 32), "vgg16"
    )
    stamp = os.stat(path).st_mtime_ns
    script = textwrap.dedent("""
        import pickle, sys
        import numpy as np
        from sklearn_convfeat import _backends
        def no_export(*args):
            raise AssertionError("exported again")
        _backends.export_onnx = no_export
        extractor, X = pickle.load(sys.stdin.buffer)
        np.save(sys.stdout.buffer, extractor.transform(X))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], input=pickle.dumps((fitted, X)),
        capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    np.testing.assert_array_equal(np.load(io.BytesIO(result.stdout)), features)
    assert os.stat(path).st_mtime_ns == stamp


def test_cache_folder_is_keras_home_or_a_temporary_one(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert _backends.cache_dir() == str(tmp_path / "home" / "sklearn_convfeat")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(blocked))
    monkeypatch.setattr(_backends.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    fallback = tmp_path / "tmp" / ".keras" / "sklearn_convfeat"
    assert _backends.cache_dir() == str(fallback)


def test_file_name_holds_everything_the_export_depends_on():
    key = _backends.model_key("vgg16", "ab" * 32, "block3_pool", (150, 120), "rescale")
    assert key == (
        f"vgg16-{'ab' * 10}-block3_pool-150x120-rescale-v{_backends.FORMAT_VERSION}"
    )


def test_an_interrupted_export_leaves_no_file(backend, monkeypatch, keras_home):
    params = dict(SMALL, layer="block1_conv1", image_size=(48, 48), pooling="avg",
                  backend=backend)
    rename = "replace" if backend == "onnxruntime" else "rename"

    def killed(*args):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(_backends.os, rename, killed)
    suffix = {"onnxruntime": ".onnx", "openvino": ".openvino"}[backend]

    def files():
        return [name for name in os.listdir(keras_home) if "48x48" in name
                and suffix in name]

    with pytest.raises(KeyboardInterrupt):
        ConvFeatureExtractor(**params).fit(X)
    assert not files()  # neither the model nor a temporary file
    monkeypatch.undo()
    ConvFeatureExtractor(**params).fit(X)
    assert len(files()) == 1 and not files()[0].startswith(".")


def test_no_temporary_files_are_left(backend, keras_home):
    ConvFeatureExtractor(backend=backend, **SMALL).fit(X)
    names = os.listdir(keras_home)
    assert names
    assert not [name for name in names if name.startswith(".") or "tmp" in name]


def test_a_corrupt_export_is_rebuilt(backend, exports):
    params = dict(SMALL, layer="block1_conv1", image_size=(40, 40), pooling="max",
                  backend=backend)
    fitted = ConvFeatureExtractor(**params).fit(X)
    reference = fitted.transform(X)
    path = _backends.model_path(
        backend, weights_source(fitted), "block1_conv1", (40, 40), "vgg16"
    )
    made = len(exports[backend])
    damaged = path if backend == "onnxruntime" else os.path.join(path, "model.bin")
    with open(damaged, "r+b") as file:  # a truncated copy, a full disk...
        file.truncate(os.path.getsize(damaged) // 2)
    _backends.clear_cache()
    features = ConvFeatureExtractor(**params).fit(X).transform(X)
    assert len(exports[backend]) == made + 1
    np.testing.assert_array_equal(features, reference)


def test_threads_asking_at_once_export_once(backend, exports):
    from concurrent.futures import ThreadPoolExecutor

    source = weights_source(ConvFeatureExtractor(**SMALL).fit(X[:1]))

    def runner(_):
        return _backends.get_runner(backend, source, "block1_conv1", (32, 32), "vgg16")

    with ThreadPoolExecutor(4) as pool:
        runners = list(pool.map(runner, range(4)))
    assert len(exports[backend]) == 1
    assert all(runner is runners[0] for runner in runners)


def test_pipeline_and_grid_search(backend):
    pipe = Pipeline([
        ("feat", ConvFeatureExtractor(backend=backend, pooling="avg", **SMALL)),
        ("clf", LogisticRegression(max_iter=200)),
    ])
    search = GridSearchCV(pipe, {"feat__pooling": ["avg", "max"]}, cv=2).fit(X, Y)
    assert search.best_estimator_.named_steps["feat"].backend == backend
    assert search.predict(X).shape == (8,)


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["tensorflow", "onnxruntime"])
def test_int8_needs_openvino(backend_name):
    with pytest.raises(
        ValueError,
        match=rf"`quantize='int8'` needs `backend='openvino'`.*Got "
        rf"backend='{backend_name}' instead: set backend='openvino' or 'auto', or "
        r"quantize=None",
    ):
        ConvFeatureExtractor(backend=backend_name, quantize="int8", **SMALL).fit(X)


@pytest.mark.parametrize(
    "params, match",
    [({"backend": "torch"},
      r"'backend' parameter .* must be a str among .*'onnxruntime'.*Got 'torch'"),
     ({"quantize": "int4"},
      r"'quantize' parameter .* must be a str among \{'int8'\} or None. Got 'int4'")],
)
def test_bad_backend_parameters_are_named(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        ConvFeatureExtractor(**params, **SMALL).fit(X)


@pytest.mark.parametrize(
    "backend_name, quantize, missing, extra",
    [("onnxruntime", None, "onnxruntime", "onnx"),
     ("onnxruntime", None, "tf2onnx", "onnx"),
     ("openvino", None, "openvino", "openvino"),
     ("openvino", "int8", "nncf", "openvino")],
)
def test_a_missing_extra_names_the_pip_command(monkeypatch, backend_name, quantize,
                                               missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # import now raises ImportError
    with pytest.raises(
        ImportError,
        match=rf"backend='{backend_name}'.* needs the package '{missing}'.*"
        rf'pip install "sklearn-convfeat\[{extra}\]"',
    ):
        ConvFeatureExtractor(backend=backend_name, quantize=quantize, **SMALL).fit(X)


# --- INT8 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8():
    """(fitted INT8 extractor, its features, the FP32 features) on X."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    params = dict(SMALL, backend="openvino")
    fp32 = ConvFeatureExtractor(**params).fit(X).transform(X)
    extractor = ConvFeatureExtractor(quantize="int8", **params).fit(X)
    return extractor, extractor.transform(X), fp32


def centred(features):
    return features - features.mean(axis=0)


def test_int8_is_calibrated_in_fit_and_close_to_fp32(int8):
    extractor, features, fp32 = int8
    assert extractor.n_calibration_images_ == len(X)
    xml, _ = extractor._quantized_ir
    assert b"FakeQuantize" in xml  # an 8-bit model, not the FP32 one
    assert not np.array_equal(features, fp32)
    # Correlation of what differs between images (the per-feature mean removed): what a
    # classifier on top sees. 0.996 here; other images' FP32 features give about -0.2.
    corr = np.corrcoef(centred(features).ravel(), centred(fp32).ravel())[0, 1]
    assert corr > 0.99
    shuffled = np.corrcoef(centred(features).ravel(), centred(fp32[::-1]).ravel())[0, 1]
    assert shuffled < 0.5


@pytest.mark.slow
def test_int8_efficientnet_compiles_and_stays_close_to_fp32():
    """NNCF quantizes some of EfficientNet's activations per channel along an axis
    OpenVINO's CPU plugin refuses; they are quantized per tensor instead. Stage 2: in
    a random-weight EfficientNet the signal fades to ~1e-9 by stage 5, where INT8
    rounds it to 0 (random weights cannot show agreement there)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    params = dict(backbone="efficientnetb0", weights=None, image_size=64, pooling="avg",
                  backend="openvino", random_state=0, layer=2)
    fp32 = ConvFeatureExtractor(**params).fit(images).transform(images)
    features = ConvFeatureExtractor(quantize="int8", **params).fit(images).transform(images)
    corr = np.corrcoef(centred(features).ravel(), centred(fp32).ravel())[0, 1]
    assert corr > 0.9


def test_int8_calibration_depends_on_the_images_and_is_bounded(int8, monkeypatch):
    extractor, _, _ = int8
    monkeypatch.setattr(_backends, "MAX_CALIBRATION_IMAGES", 3)
    darker = make_images(8, seed=5) // 2
    other = ConvFeatureExtractor(**extractor.get_params()).fit(darker)
    assert other.n_calibration_images_ == 3
    assert other._quantized_ir[0] != extractor._quantized_ir[0]  # other ranges learned


def test_int8_round_trips_without_recalibrating(int8, monkeypatch, tmp_path):
    extractor, features, _ = int8

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(_backends, "quantize_int8", no_calibration)
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(restored.transform(X), features)
    joblib.dump(extractor, tmp_path / "int8.joblib")
    loaded = joblib.load(tmp_path / "int8.joblib")
    np.testing.assert_array_equal(loaded.transform(X), features)
    assert "_runner" not in extractor.__getstate__()  # the compiled model stays behind


def test_int8_clone_is_unfitted(int8):
    extractor, _, _ = int8
    twin = clone(extractor)
    assert twin.get_params() == extractor.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(twin)
    assert not hasattr(twin, "_quantized_ir")


def test_refit_without_quantize_drops_the_int8_model(int8):
    extractor, _, fp32 = int8
    plain = pickle.loads(pickle.dumps(extractor)).set_params(quantize=None).fit(X)
    assert plain._quantized_ir is None
    assert not hasattr(plain, "n_calibration_images_")
    np.testing.assert_array_equal(plain.transform(X), fp32)


# --- with the feature cache (memory=) ------------------------------------------------


def test_memory_caches_each_backend_separately(backend, tmp_path):
    from sklearn_convfeat import _cache

    params = dict(SMALL, backend=backend, memory=tmp_path)
    extractor = ConvFeatureExtractor(**params).fit(X)
    miss = extractor.transform(X)
    _cache.clear_ram_cache()
    np.testing.assert_array_equal(extractor.transform(X), miss)  # from disk
    np.testing.assert_allclose(
        miss, ConvFeatureExtractor(**dict(params, memory=None)).fit(X).transform(X),
        rtol=1e-5, atol=1e-6,
    )
    tensorflow = ConvFeatureExtractor(**dict(params, backend="tensorflow")).fit(X)
    tensorflow.transform(X)
    namespaces = [p for p in (tmp_path / _cache.SUBFOLDER).iterdir() if p.is_dir()]
    assert len(namespaces) == 2


def test_memory_never_serves_int8_features_as_fp32_or_across_calibrations(int8, tmp_path):
    extractor, features, fp32 = int8
    cached_fp32 = ConvFeatureExtractor(**SMALL, backend="openvino", memory=tmp_path)
    np.testing.assert_allclose(cached_fp32.fit(X).transform(X), fp32, rtol=1e-5, atol=1e-6)
    cached_int8 = clone(extractor).set_params(memory=tmp_path).fit(X)
    np.testing.assert_allclose(cached_int8.transform(X), features, rtol=1e-5, atol=1e-6)
    other_calibration = clone(cached_int8).fit(X[:3])
    assert not np.allclose(other_calibration.transform(X), features)
