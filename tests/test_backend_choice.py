"""backend="auto" (the default): which backend runs, and what ``backend_`` says.

The measured rule lists the depthwise-convolution families; these tests give VGG16 a
rule of their own (``rule_for_vgg16``) so that the choice is made on the 32×32
block2_pool cut whose exports take a second.
"""

import pickle
import warnings

import joblib
import numpy as np
import pytest
from conftest import fresh_keras_home

from sklearn_convfeat import ConvFeatureExtractor, _backend_choice, _backends
from sklearn_convfeat._backbones import FAMILIES
from sklearn_convfeat._extractor import feature_store

SMALL = {
    "weights": None, "image_size": (32, 32), "random_state": 0, "layer": "block2_pool",
    "pooling": "avg",
}
X = np.random.default_rng(0).integers(0, 256, size=(8, 36, 36, 3), dtype=np.uint8)
# Images at 224 px that would pay for an export, for the 8 images of X at 32 px to do.
PAYS = 8 * 32 * 32 / (224 * 224)


@pytest.fixture(autouse=True)
def keras_home(tmp_path_factory):
    """A fresh KERAS_HOME per test: "auto" looks for exports on disk."""
    with fresh_keras_home(tmp_path_factory) as folder:
        yield folder


def needs(backend):
    for module in {"onnxruntime": ("onnxruntime", "tf2onnx"),
                   "openvino": ("openvino",)}[backend]:
        pytest.importorskip(module)
    return backend


@pytest.fixture
def exported():
    """The exported backend of most tests: OpenVINO, the quicker to export."""
    return needs("openvino")


def rule_for_vgg16(monkeypatch, backends, break_even_224):
    """A rule for VGG16 on this CPU, whatever its kind."""
    monkeypatch.setattr(_backend_choice, "cpu_kind", lambda: "avx512")
    monkeypatch.setitem(
        _backend_choice.AUTO_RULES, "avx512",
        {**_backend_choice.AUTO_RULES["avx512"], "vgg16": (backends, break_even_224)},
    )


def tensorflow_features():
    return ConvFeatureExtractor(backend="tensorflow", **SMALL).fit(X).transform(X)


def test_auto_is_the_default_and_keeps_tensorflow_for_unlisted_families():
    extractor = ConvFeatureExtractor(**SMALL)
    assert extractor.backend == "auto"
    extractor.fit(X)
    assert extractor.backend_ == "tensorflow"
    np.testing.assert_array_equal(extractor.transform(X), tensorflow_features())


def test_every_rule_names_a_keras_applications_family_and_real_backends():
    assert set(_backend_choice.AUTO_RULES) == {"avx512", "avx2"}
    for rules in _backend_choice.AUTO_RULES.values():
        for family, (backends, break_even) in rules.items():
            assert family in FAMILIES
            assert backends and set(backends) <= set(_backends.BACKENDS) - {"tensorflow"}
            assert break_even > 0


def test_the_cpu_kind_is_read_from_its_flags():
    assert _backend_choice.cpu_kind() in ("avx512", "avx2", None)


def test_a_cpu_without_measurements_runs_tensorflow(monkeypatch, exported):
    rule_for_vgg16(monkeypatch, (exported,), PAYS)
    monkeypatch.setattr(_backend_choice, "cpu_kind", lambda: None)
    assert ConvFeatureExtractor(**SMALL).fit(X).backend_ == "tensorflow"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_auto_exports_when_the_job_pays_for_the_export(monkeypatch, backend):
    exported = needs(backend)
    rule_for_vgg16(monkeypatch, (exported,), PAYS)
    extractor = ConvFeatureExtractor(**SMALL).fit(X)
    assert extractor.backend_ == exported
    reference = tensorflow_features()
    features = extractor.transform(X)
    assert np.abs(features - reference).max() / np.abs(reference).max() < 1e-4


def test_a_small_job_stays_on_tensorflow_without_an_export(monkeypatch, exported):
    rule_for_vgg16(monkeypatch, (exported,), 2 * PAYS)
    extractor = ConvFeatureExtractor(**SMALL).fit(X)
    assert extractor.backend_ == "tensorflow"
    assert not _backends.has_export(
        exported, extractor._weights_source, extractor.layer_, extractor.image_size_,
        extractor.preprocessing_,
    )


def test_an_export_on_disk_is_used_for_a_small_job(monkeypatch, exported):
    ConvFeatureExtractor(backend=exported, **SMALL).fit(X)
    _backends.clear_cache()  # as in a new process: only the file remains
    rule_for_vgg16(monkeypatch, (exported,), 1e9)
    extractor = ConvFeatureExtractor(**SMALL).fit(X[:1])
    assert extractor.backend_ == exported


def test_the_first_installed_backend_of_the_rule_is_taken(monkeypatch, exported):
    rule_for_vgg16(monkeypatch, ("not-installed", exported), PAYS)
    monkeypatch.setattr(
        _backend_choice, "installed", lambda backend: backend == exported
    )
    assert ConvFeatureExtractor(**SMALL).fit(X).backend_ == exported


def test_no_installed_backend_of_the_rule_means_tensorflow(monkeypatch):
    rule_for_vgg16(monkeypatch, ("onnxruntime", "openvino"), PAYS)
    monkeypatch.setattr(_backend_choice, "installed", lambda backend: False)
    assert ConvFeatureExtractor(**SMALL).fit(X).backend_ == "tensorflow"


def test_a_failed_export_falls_back_to_tensorflow_with_a_warning(monkeypatch, exported):
    rule_for_vgg16(monkeypatch, (exported,), PAYS)

    def failing_export(function, path):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(_backends, "export_onnx", failing_export)
    monkeypatch.setattr(_backends, "export_openvino", failing_export)
    with pytest.warns(
        RuntimeWarning,
        match=rf"backend='auto' chose '{exported}' for VGG16, but its export failed "
        r"\(RuntimeError: unsupported operator Foo\); running TensorFlow instead",
    ):
        extractor = ConvFeatureExtractor(**SMALL).fit(X)
    assert extractor.backend_ == "tensorflow"
    np.testing.assert_array_equal(extractor.transform(X), tensorflow_features())


def test_an_asked_backend_whose_export_fails_raises(monkeypatch, exported):
    def failing_export(function, path):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(_backends, "export_onnx", failing_export)
    monkeypatch.setattr(_backends, "export_openvino", failing_export)
    with pytest.raises(RuntimeError, match="unsupported operator Foo"):
        ConvFeatureExtractor(backend=exported, **SMALL).fit(X)


def test_auto_with_int8_runs_openvino():
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    extractor = ConvFeatureExtractor(quantize="int8", **SMALL).fit(X)
    assert extractor.backend_ == "openvino"
    assert extractor.n_calibration_images_ == len(X)


def test_the_feature_cache_is_keyed_by_what_ran(monkeypatch, exported):
    def namespace(backend):
        extractor = ConvFeatureExtractor(
            backend=backend, memory=joblib.Memory(None), **SMALL
        ).fit(X)
        return extractor.backend_, feature_store(extractor).namespace

    rule_for_vgg16(monkeypatch, (exported,), PAYS)
    ran, auto = namespace("auto")
    assert ran == exported
    assert auto == namespace(exported)[1] != namespace("tensorflow")[1]


def test_backend_is_a_fitted_setting():
    extractor = ConvFeatureExtractor(**SMALL).fit(X)
    extractor.set_params(backend="tensorflow")
    with pytest.raises(ValueError, match="backend"):
        extractor.transform(X)


def test_pickles_round_trip_backend_():
    extractor = ConvFeatureExtractor(**SMALL).fit(X)
    loaded = pickle.loads(pickle.dumps(extractor))
    assert loaded.backend_ == "tensorflow"
    np.testing.assert_array_equal(loaded.transform(X), extractor.transform(X))


def test_an_extractor_pickled_before_auto_runs_its_own_backend():
    extractor = ConvFeatureExtractor(backend="tensorflow", **SMALL).fit(X)
    state = extractor.__getstate__()
    del state["backend_"]
    old = ConvFeatureExtractor.__new__(ConvFeatureExtractor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's version check of the state
        old.__setstate__(state)
    assert old.backend_ == "tensorflow"
    np.testing.assert_array_equal(old.transform(X), extractor.transform(X))


def test_quantize_with_another_backend_names_auto_as_a_fix():
    with pytest.raises(
        ValueError,
        match=r"`quantize='int8'` needs `backend='openvino'`.*Got "
        r"backend='onnxruntime' instead: set backend='openvino' or 'auto', or "
        r"quantize=None",
    ):
        ConvFeatureExtractor(backend="onnxruntime", quantize="int8", **SMALL).fit(X)
