import numpy as np
import pytest

from sklearn_convfeat._backbone import get_base
from sklearn_convfeat._weights import (
    IMAGENET_CONTENT_SHA256,
    WEIGHTS_ENV_VAR,
    WeightsSource,
    WeightsUnavailableError,
    build_base,
    resolve_weights,
)


def test_none_means_seeded_random_weights():
    assert resolve_weights(None, seed=7) == WeightsSource("random", seed=7)
    first = build_base(WeightsSource("random", seed=7)).get_weights()
    again = build_base(WeightsSource("random", seed=7)).get_weights()
    other = build_base(WeightsSource("random", seed=8)).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert not first[1].any()  # biases start at zero


def test_imagenet_uses_keras_download_unless_the_environment_points_elsewhere(
    monkeypatch, tmp_path
):
    assert resolve_weights("imagenet", seed=0) == WeightsSource("imagenet")
    local = tmp_path / "vgg.weights.h5"
    local.write_bytes(b"")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(local))
    assert resolve_weights("imagenet", seed=0) == WeightsSource("file", path=str(local))


def test_environment_variable_pointing_nowhere_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "missing.h5"))
    with pytest.raises(WeightsUnavailableError, match=f"{WEIGHTS_ENV_VAR} points.*neither a file nor a folder"):
        resolve_weights("imagenet", seed=0)


def test_a_failed_download_names_both_offline_options(monkeypatch):
    import keras

    def no_network(**kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "VGG16", no_network)
    with pytest.raises(WeightsUnavailableError) as excinfo:
        build_base(WeightsSource("imagenet"))
    message = str(excinfo.value)
    assert "URL fetch failure" in message
    assert "weights='/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'" in message
    assert WEIGHTS_ENV_VAR in message


def test_weights_path_must_exist_and_be_a_keras_weights_file(tmp_path):
    with pytest.raises(ValueError, match="`weights` must be 'imagenet', None, or the path.*not a file"):
        resolve_weights(str(tmp_path / "nope.h5"), seed=0)
    wrong = tmp_path / "weights.npz"
    wrong.write_bytes(b"")
    with pytest.raises(ValueError, match="`weights` file must end in one of"):
        resolve_weights(wrong, seed=0)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit the VGG16 convolutional base"):
        build_base(resolve_weights(path, seed=0))


def test_a_saved_base_round_trips_through_a_file(tmp_path):
    base = get_base(WeightsSource("random", seed=3))
    path = tmp_path / "base.weights.h5"
    base.model.save_weights(path)
    reloaded = get_base(resolve_weights(path, seed=0))
    assert reloaded.sha256 == base.sha256


@pytest.mark.real_weights
def test_the_shared_file_holds_the_real_imagenet_weights(real_weights):
    base = get_base(resolve_weights(real_weights, seed=0))
    assert base.sha256 == IMAGENET_CONTENT_SHA256
    kernel, bias = base.model.get_layer("block1_conv1").get_weights()
    assert kernel[0, 0, 0, 0] == pytest.approx(0.42947057)
    np.testing.assert_allclose(bias[:3], [0.73429835, 0.09340367, 0.06775674], rtol=1e-6)


def test_a_weights_file_overwritten_in_place_is_read_again(tmp_path, images):
    from sklearn_convfeat import ConvFeatureExtractor

    path = tmp_path / "base.weights.h5"
    get_base(WeightsSource("random", seed=3)).model.save_weights(path)
    params = dict(weights=str(path), image_size=(32, 32), layer=2)
    before = ConvFeatureExtractor(**params).fit(images)
    old_features = before.transform(images)
    get_base(WeightsSource("random", seed=4)).model.save_weights(path)
    after = ConvFeatureExtractor(**params).fit(images)
    # A new extractor reads the new file, not the copy this process cached.
    assert after.weights_sha256_ == get_base(WeightsSource("random", seed=4)).sha256
    assert not np.allclose(after.transform(images), old_features)
    # One fitted on the old weights refuses to mix them up.
    before._runner = None  # as in a fresh process
    with pytest.raises(RuntimeError, match="changed since this extractor was fitted"):
        before.transform(images)


def test_the_environment_may_name_a_folder_of_files_under_keras_names(monkeypatch, tmp_path):
    (tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path))
    resnet = resolve_weights("imagenet", seed=0, architecture="ResNet50")
    assert resnet.kind == "file"
    assert resnet.path == str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    # A network whose file is not there goes through Keras' own download and cache.
    assert resolve_weights("imagenet", seed=0, architecture="VGG19").kind == "imagenet"


def test_a_single_file_in_the_environment_keeps_meaning_vgg16(monkeypatch, tmp_path):
    local = tmp_path / "vgg.weights.h5"
    local.write_bytes(b"")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(local))
    assert resolve_weights("imagenet", seed=0).path == str(local)
    assert resolve_weights("imagenet", seed=0, architecture="ResNet50").kind == "imagenet"


def test_a_keras_file_of_the_base_is_read(tmp_path):
    base = get_base(WeightsSource("random", seed=5, architecture="MobileNetV3Small"))
    path = tmp_path / "mobilenet.keras"
    base.model.save(path)
    loaded = get_base(resolve_weights(path, seed=0, architecture="MobileNetV3Small"))
    assert loaded.sha256 == base.sha256


# ------------------------------------------------- issue 26: weights and backbone errors


def _tiny_backbone(name="tiny", middle=None):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    if middle is not None:
        x = middle(x)
    outputs = keras.layers.Conv2D(4, 3, name="c2")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    """Random MobileNetV3Small weights in Keras 3's format: a small real network."""
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet.weights.h5"
    base = get_base(WeightsSource("random", seed=2, architecture="MobileNetV3Small"))
    base.model.save_weights(path)
    return path, base.sha256


def test_a_mismatched_file_is_one_sentence_naming_both_networks(mobilenet_file):
    import warnings

    path, _ = mobilenet_file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            ValueError,
            match=r"`weights` file .* does not fit the VGG16 convolutional base "
            r"\(include_top=False\), which has 26 arrays, 14,714,688 parameters; the file "
            r"holds \d+ arrays, 939,120 parameters: those of the MobileNetV3Small base\. "
            r"Pass backbone='MobileNetV3Small' to use this file",
        ) as excinfo:
            build_base(resolve_weights(path, seed=0))
    message = str(excinfo.value)
    assert len(message) < 500 and "\n" not in message
    assert "Variable" not in message and "value=" not in message  # no tensor dump
    # Keras' per-layer warnings of the failed attempt stay out of the user's way.
    assert not [w for w in caught if "Skipping" in str(w.message)], caught[:3]


def test_a_mismatch_with_ones_own_backbone_names_it_once(tmp_path):
    import keras

    other = _tiny_backbone("other")
    bigger = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(8, 5)])
    path = tmp_path / "bigger.weights.h5"
    bigger.save_weights(path)
    from sklearn_convfeat._architectures import own_model_identity

    source = resolve_weights(path, seed=0, architecture=None, model=own_model_identity(other))
    with pytest.raises(
        ValueError,
        match=r"does not fit the `backbone` model 'other', which has 4 arrays, 260 "
        r"parameters; the file holds 2 arrays, 608 parameters\. Pass a file saved from "
        r"that network",
    ) as excinfo:
        build_base(source)
    assert "the the" not in str(excinfo.value)


def test_the_environment_file_is_judged_by_its_content_not_its_name(
    monkeypatch, tmp_path, mobilenet_file
):
    import shutil

    from sklearn_convfeat._architectures import keras_weights_file

    path, _ = mobilenet_file
    shutil.copyfile(path, tmp_path / keras_weights_file("VGG16"))
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path))
    with pytest.raises(
        ValueError,
        match=rf"The weights file .*{keras_weights_file('VGG16')}' that {WEIGHTS_ENV_VAR} "
        r"names for weights='imagenet' does not fit the VGG16 convolutional base.*"
        r"939,120 parameters: those of the MobileNetV3Small base\. Put the VGG16 notop "
        r"weights there",
    ):
        build_base(resolve_weights("imagenet", seed=0))


def test_a_keras3_file_under_a_legacy_name_is_read_by_its_content(
    monkeypatch, tmp_path, mobilenet_file
):
    import shutil

    from sklearn_convfeat._architectures import keras_weights_file

    path, sha256 = mobilenet_file
    # Keras would read this name as Keras 2's format and find "0 saved layers".
    legacy_name = tmp_path / keras_weights_file("MobileNetV3Small")
    shutil.copyfile(path, legacy_name)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path))
    source = resolve_weights("imagenet", seed=0, architecture="MobileNetV3Small")
    assert source.path == str(legacy_name)
    assert get_base(source).sha256 == sha256


def test_a_legacy_file_under_a_keras3_name_is_read_by_its_content(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # Keras 3 writes no other .h5

    from sklearn_convfeat._architectures import own_model_identity
    from sklearn_convfeat._weights import content_sha256

    model = _tiny_backbone()
    path = tmp_path / "legacy.weights.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    source = resolve_weights(path, seed=0, architecture=None, model=own_model_identity(model))
    assert content_sha256(build_base(source)) == content_sha256(model)


def test_warnings_of_a_successful_load_are_still_shown(monkeypatch, tmp_path):
    import keras

    model = _tiny_backbone()
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    load_weights = keras.Model.load_weights

    def noisy(self, *args, **kwargs):
        import warnings

        warnings.warn("a notice worth seeing", UserWarning, stacklevel=2)
        return load_weights(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "load_weights", noisy)
    from sklearn_convfeat._architectures import own_model_identity

    source = resolve_weights(path, seed=0, architecture=None, model=own_model_identity(model))
    with pytest.warns(UserWarning, match="a notice worth seeing"):
        build_base(source)


@pytest.fixture
def unsafe_deserialization():
    """keras.config.enable_unsafe_deserialization() for one test, then safe again."""
    import keras
    from keras.src.backend.common import global_state  # Keras has no public "disable"

    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    yield
    global_state.set_global_attribute("safe_mode_saving", before)


def _lambda_backbone():
    import keras

    return _tiny_backbone("with_lambda", keras.layers.Lambda(lambda t: t * 2, name="double"))


LAMBDA_REASON = (
    r"cannot be rebuilt: its `Lambda` layer 'double' wraps a Python lambda, which is "
    r"code, and sklearn_convfeat rebuilds Keras networks from their \.keras form in "
    r"Keras' safe mode .* @keras\.saving\.register_keras_serializable\(\).* "
    r"keras\.config\.enable_unsafe_deserialization\(\) before fitting or loading"
)


def test_a_python_lambda_in_ones_backbone_is_refused_with_the_reason(images):
    from sklearn_convfeat import ConvFeatureExtractor

    extractor = ConvFeatureExtractor(backbone=_lambda_backbone(), layer="c2")
    with pytest.raises(ValueError, match="`backbone` " + LAMBDA_REASON):
        extractor.fit(images)


def test_unsafe_deserialization_lets_a_trusted_lambda_through_fit_and_loading(
    images, tmp_path, unsafe_deserialization
):
    import pickle

    from keras.src.backend.common import global_state

    from sklearn_convfeat import ConvFeatureExtractor, load, save

    extractor = ConvFeatureExtractor(
        backbone=_lambda_backbone(), layer="c2", image_size=(32, 32)
    ).fit(images)
    features = extractor.transform(images)
    data = pickle.dumps(extractor)
    np.testing.assert_array_equal(pickle.loads(data).transform(images), features)
    save(extractor, tmp_path / "lambda.skops")
    np.testing.assert_array_equal(load(tmp_path / "lambda.skops").transform(images), features)
    # Back in safe mode, loading says the same as fit.
    global_state.set_global_attribute("safe_mode_saving", None)
    saved = "The `backbone` of this saved ConvFeatureExtractor " + LAMBDA_REASON
    with pytest.raises(ValueError, match=saved):
        pickle.loads(data)
    with pytest.raises(ValueError, match=saved):
        load(tmp_path / "lambda.skops")


def test_a_registered_custom_layer_is_the_safe_alternative_to_a_lambda(images):
    import pickle

    import keras

    from sklearn_convfeat import ConvFeatureExtractor

    @keras.saving.register_keras_serializable(package="test_weights")
    class Double(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2

    extractor = ConvFeatureExtractor(
        backbone=_tiny_backbone(middle=Double()), layer="c2", image_size=(32, 32)
    )
    features = extractor.fit(images).transform(images)
    again = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(again.transform(images), features)
