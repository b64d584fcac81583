"""Errors of the ``convfeat`` command line that come from deep inside a run (loading
weights), checked through a real subprocess: what the user's terminal shows."""

import pytest
from conftest import make_image_folder
from test_cli import convfeat, error_of, finish

# A subprocess pays TensorFlow's import: the slow tier.
pytestmark = pytest.mark.slow


def test_a_weights_file_of_another_network_is_one_line_without_keras_warnings(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    weights = tmp_path / "other.weights.h5"
    other.save_weights(weights)
    folder = make_image_folder(tmp_path / "images", {"cats": 1, "dogs": 1}, size=(32, 32))
    result = finish(
        convfeat(
            "extract", folder, "-o", tmp_path / "f.npy", "--weights", weights,
            "--image-size", "32", "--quiet",
        )
    )
    # Before: one "Skipping nested container" warning (two lines) per VGG16 layer.
    assert "Skipping" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    error = error_of(result)
    assert error.startswith("convfeat extract: error: `weights` file ")
    assert "does not fit the VGG16 convolutional base" in error
    assert "the file holds 2 arrays, 112 parameters" in error
    assert len(error) < 500
