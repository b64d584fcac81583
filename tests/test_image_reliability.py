"""Decoding and input checks that used to go wrong silently or obscurely (issue 14)."""

import tracemalloc

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from sklearn_convfeat import ConvFeatureExtractor, load_image_folder
from sklearn_convfeat._decode import decode_image, resize, to_rgb
from sklearn_convfeat._images import (
    ImageFiles,
    check_images,
)

# --- 16-bit images -----------------------------------------------------------------


def gradient_16bit(height=16, width=64):
    """A left-to-right 0..65535 gradient, uint16."""
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    return np.tile(row, (height, 1))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_files_are_scaled_by_their_range_not_saturated(tmp_path, ext):
    pixels = gradient_16bit()
    path = tmp_path / f"grey16{ext}"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I")

    decoded = decode_image(path)

    expected = np.rint(pixels.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert decoded.dtype == np.uint8 and decoded.shape == (16, 64, 3)
    np.testing.assert_array_equal(decoded[..., 0], expected)
    assert decoded.min() == 0 and decoded.max() == 255
    assert len(np.unique(decoded)) > 50  # a gradient, not a white sheet


def test_uint16_arrays_follow_the_same_rule_as_16_bit_files(tmp_path):
    pixels = gradient_16bit()
    path = tmp_path / "grey16.png"
    Image.fromarray(pixels).save(path)
    from_file = next(check_images([path]).batches(1, (16, 64))).images
    from_array = next(check_images(pixels[np.newaxis]).batches(1, (16, 64))).images
    np.testing.assert_array_equal(from_file, from_array)
    assert from_array.max() == 255.0


def test_uint16_arrays_holding_8_bit_values_warn():
    with pytest.warns(UserWarning, match="uint16.*65535.*astype\\('uint8'\\)"):
        check_images(np.full((1, 8, 8, 3), 200, dtype=np.uint16))


@pytest.mark.parametrize(
    "X", [np.full((1, 8, 8, 3), 1000.0), np.full((1, 8, 8), -5, dtype=np.int16),
          np.full((1, 8, 8, 3), 70000, dtype=np.int32)],
)
def test_pixel_values_outside_0_255_warn_with_the_expected_range(X):
    with pytest.warns(UserWarning, match="outside \\[0, 255\\].*expected in \\[0, 255\\]"):
        check_images(X)


# --- EXIF orientation --------------------------------------------------------------


def save_rotated_jpeg(path, orientation):
    """A 40x20 (w x h) JPEG, left half black, right half white, with an EXIF tag."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)


def test_exif_orientation_is_applied_when_decoding(tmp_path):
    path = tmp_path / "rotated.jpg"
    save_rotated_jpeg(path, orientation=6)  # "rotate 90° clockwise to display"
    decoded = decode_image(path)
    assert decoded.shape == (40, 20, 3)
    # Clockwise: the white right half ends up at the bottom.
    assert decoded[:15].mean() < 30 and decoded[25:].mean() > 225


def test_image_shape_reports_the_upright_size(tmp_path):
    path = tmp_path / "rotated.jpg"
    save_rotated_jpeg(path, orientation=8)
    files = check_images([path])
    assert tuple(files.image_shape(0)) == (40, 20)
    assert tuple(files.image_shape(0)) == decode_image(path).shape[:2]


def test_upright_and_tagged_copies_give_the_same_features(tmp_path):
    upright = np.zeros((40, 20, 3), dtype=np.uint8)
    upright[20:] = 255
    Image.fromarray(upright).save(tmp_path / "upright.png")
    save_rotated_jpeg(tmp_path / "tagged.jpg", orientation=6)
    pixels = [
        next(check_images([tmp_path / name]).batches(1, (32, 32))).images
        for name in ("upright.png", "tagged.jpg")
    ]
    assert np.abs(pixels[0] - pixels[1]).mean() < 3  # JPEG noise only


# --- memory: one image at a time, JPEG draft mode ------------------------------------


def test_files_decode_exactly_as_resizing_the_whole_batch(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (height, width) in enumerate([(30, 40), (30, 40), (47, 33), (64, 64)]):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    decoded = next(check_images(paths).batches(4, (24, 24))).images
    for row, path in enumerate(paths):
        expected = resize(to_rgb(decode_image(path)[np.newaxis]), (24, 24))[0]
        np.testing.assert_array_equal(decoded[row], expected)
    same_size = resize(to_rgb(np.stack([decode_image(p) for p in paths[:2]])), (24, 24))
    np.testing.assert_array_equal(decoded[:2], same_size)


def test_large_jpegs_are_decoded_at_a_reduced_scale_still_above_the_target(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1600, 1200), (90, 140, 200)).save(path)
    small = decode_image(path, size=(150, 150))
    assert small.shape == (150, 200, 3)  # libjpeg's 1/8 scale
    assert decode_image(path).shape == (1200, 1600, 3)  # no size: full resolution
    # Colour survives draft decoding.
    assert np.abs(small.astype(int) - (90, 140, 200)).max() <= 3


def test_draft_decoding_can_be_turned_off(tmp_path, monkeypatch):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1600, 1200), (90, 140, 200)).save(path)
    monkeypatch.setenv("SKLEARN_CONVFEAT_JPEG_DRAFT", "0")
    assert decode_image(path, size=(150, 150)).shape == (1200, 1600, 3)


def test_small_jpegs_are_decoded_at_full_resolution(tmp_path):
    path = tmp_path / "small.jpg"
    Image.new("RGB", (200, 200), (10, 20, 30)).save(path)
    np.testing.assert_array_equal(decode_image(path, size=(150, 150)), decode_image(path))


def test_decoding_a_batch_holds_one_full_size_image_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        pixels = rng.integers(0, 256, size=(600, 800, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    one_image_float32 = 600 * 800 * 3 * 4
    files = check_images(paths)
    tracemalloc.start()
    try:
        next(files.batches(8, (32, 32)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * one_image_float32, peak / one_image_float32


# --- unordered containers, obscure inputs --------------------------------------------


@pytest.fixture
def paths(image_folder):
    return [str(p) for p in sorted(image_folder.rglob("*.png"))]


@pytest.mark.parametrize(
    "wrap, name",
    [(set, "set"), (frozenset, "frozenset"), (lambda p: dict.fromkeys(p).keys(), "dict_keys"),
     (dict.fromkeys, "dict")],
)
def test_unordered_containers_of_paths_are_refused(paths, wrap, name):
    with pytest.raises(TypeError, match=f"Got a {name}.*no fixed order.*sorted\\("):
        check_images(wrap(paths))


def test_bytes_paths_are_refused_with_the_fix(paths):
    with pytest.raises(TypeError, match="bytes.*X\\[0\\].*os.fsdecode"):
        check_images([p.encode() for p in paths])


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_missing_values_among_paths_are_named(paths, missing):
    X = paths[:2] + [missing] + paths[2:]
    with pytest.raises(TypeError, match=f"X\\[2\\] is {missing!r}.*not a path.*drop"):
        check_images(X)


def test_a_tensorflow_tensor_is_refused_with_the_fix():
    import tensorflow as tf

    with pytest.raises(TypeError, match="tensorflow.*Tensor.*X.numpy\\(\\)"):
        check_images(tf.zeros((2, 8, 8, 3)))


def test_a_complex_array_names_its_shape_not_its_values():
    X = np.ones((2, 8, 8, 3), dtype=complex)
    with pytest.raises(ValueError, match="complex128.*\\(2, 8, 8, 3\\)") as info:
        check_images(X)
    assert len(str(info.value)) < 400


def test_a_folder_among_paths_is_called_a_folder(paths, image_folder):
    files = check_images(paths + [str(image_folder / "cats")])
    with pytest.raises(IsADirectoryError, match="X\\[6\\].*is a folder.*load_image_folder"):
        files.check_exist()


@pytest.mark.parametrize("param, value", [("layer", True), ("batch_size", True),
                                          ("batch_size", False)])
def test_booleans_are_not_taken_for_integers(images, param, value):
    extractor = ConvFeatureExtractor(weights=None, image_size=32, **{param: value})
    with pytest.raises(ValueError, match=f"'{param}' parameter.*Got {value!r} instead"):
        extractor.fit(images)


# --- load_image_folder: hidden entries ----------------------------------------------


def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path):
    root = make_image_folder(tmp_path, {"cats": 2, "dogs": 2})
    make_image_folder(root / ".ipynb_checkpoints", {"x": 1})
    make_image_folder(root / "cats" / ".thumbnails", {"y": 1})
    Image.new("RGB", (8, 8)).save(root / "dogs" / ".hidden.png")
    (root / ".DS_Store").write_text("finder")
    paths, y, class_names = load_image_folder(root)
    assert class_names == ["cats", "dogs"] and y.tolist() == [0, 0, 1, 1]
    assert len(paths) == 4 and all("/." not in str(p) for p in paths)
    assert isinstance(check_images(paths), ImageFiles)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_malformed_exif_block_does_not_make_a_photo_unreadable(tmp_path):
    path = tmp_path / "odd_exif.jpg"
    Image.new("RGB", (20, 10), (200, 30, 30)).save(path, exif=b"Exif\x00\x00MM\x00*garbage")
    assert decode_image(path).shape == (10, 20, 3)
    assert tuple(check_images([path]).image_shape(0)) == (10, 20)
