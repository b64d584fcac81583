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
    with pytest.raises(ValueError, match="does not hold the weights of the VGG16 convolutional base"):
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
