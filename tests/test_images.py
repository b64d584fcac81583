import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from sklearn_convfeat import load_image_folder
from sklearn_convfeat._decode import decode_image, resize, to_rgb
from sklearn_convfeat._images import (
    ImageArray,
    ImageFiles,
    check_images,
    prefetch,
)

# --- load_image_folder -------------------------------------------------------------


def test_load_image_folder_lists_classes_and_files_in_sorted_order(tmp_path):
    root = make_image_folder(tmp_path, {"dogs": 2, "cats": 3, "birds": 1})
    (root / "cats" / "notes.txt").write_text("not an image")
    nested = root / "birds" / "more"
    nested.mkdir()
    Image.new("RGB", (8, 8)).save(nested / "deep.JPG")

    paths, y, class_names = load_image_folder(root)

    assert class_names == ["birds", "cats", "dogs"]
    assert y.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert [Path(p).parent.name for p in paths] == ["birds", "more"] + ["cats"] * 3 + ["dogs"] * 2
    assert all(os.path.isfile(p) for p in paths)


def test_load_image_folder_needs_two_classes(tmp_path):
    make_image_folder(tmp_path, {"cats": 2})
    with pytest.raises(ValueError, match="at least two class sub-folders.*Found 1"):
        load_image_folder(tmp_path)


def test_load_image_folder_needs_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no image files"):
        load_image_folder(tmp_path)


def test_load_image_folder_needs_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="must be an existing folder"):
        load_image_folder(tmp_path / "nope")


# --- arrays ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    height=st.integers(1, 24),
    width=st.integers(5, 24),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.float64]),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
)
def test_any_image_batch_becomes_float32_rgb_at_the_requested_size(
    n, height, width, channels, dtype, size
):
    shape = (n, height, width) if channels is None else (n, height, width, channels)
    X = np.random.default_rng(0).integers(0, 256, size=shape).astype(dtype)

    images = check_images(X)
    (batch,) = list(images.batches(batch_size=n, size=size))

    assert isinstance(images, ImageArray) and len(images) == n
    assert batch.images.shape == (n, *size, 3)
    assert batch.images.dtype == np.float32
    assert np.isfinite(batch.images).all()
    assert batch.images.min() >= -1e-3 and batch.images.max() <= 255 + 1e-3


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(5, 9))))
def test_grey_images_are_replicated_to_three_equal_channels(grey):
    rgb = to_rgb(grey)
    assert rgb.shape == (*grey.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)
    np.testing.assert_array_equal(to_rgb(grey[..., None]), rgb)


def test_alpha_is_dropped():
    rgba = np.random.default_rng(0).integers(0, 256, size=(2, 5, 6, 4)).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb(rgba), rgba[..., :3].astype(np.float32))


def test_resize_is_identity_at_the_same_size_and_keeps_constant_images_constant():
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 7, 9, 3)).astype(np.float32)
    assert resize(x, (7, 9)) is x
    flat = np.full((1, 40, 30, 3), 77.0, dtype=np.float32)
    np.testing.assert_allclose(resize(flat, (13, 17)), 77.0, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(pixels=arrays(np.uint8, (1, 37, 29, 3)),
       size=st.tuples(st.integers(1, 60), st.integers(1, 60)))
def test_resized_pixels_stay_within_the_input_range(pixels, size):
    """A weighted mean of pixels never leaves their range: no 255.00002 that would
    trip the [0, 255] warning on load_images' own output."""
    x = pixels.astype(np.float32)
    resized = resize(x, size)
    assert resized.min() >= x.min() and resized.max() <= x.max()


@settings(max_examples=30, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 3), st.integers(1, 5)),
        st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.sampled_from([2, 5, 6])),
        st.tuples(*[st.integers(1, 2)] * 5),
    )
)
def test_wrong_rank_or_channel_count_is_rejected(shape):
    with pytest.raises(ValueError, match="must be a batch of images.*Got an array of shape"):
        check_images(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("channels", [2, 5])
def test_two_or_five_channels_name_the_rule(channels):
    with pytest.raises(ValueError, match=f"with {channels} channels: give grey \\(1\\), RGB \\(3\\)"):
        check_images(np.zeros((2, 8, 8, channels)))


def test_a_single_colour_image_is_not_mistaken_for_grey_images():
    with pytest.raises(ValueError, match="reads as one RGB image.*X\\[np.newaxis\\]"):
        check_images(np.zeros((32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_rejected(bad):
    X = np.zeros((2, 8, 8, 3), dtype=np.float32)
    X[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        check_images(X)


@pytest.mark.parametrize("empty", [[], np.zeros((0, 8, 8, 3)), ()])
def test_empty_input_is_rejected(empty):
    with pytest.raises(ValueError, match="X is empty.*at least one image"):
        check_images(empty)


def test_boolean_images_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="boolean array.*astype\\('uint8'\\)"):
        check_images(np.zeros((2, 8, 8), dtype=bool))


def test_images_scaled_to_unit_range_warn_but_black_images_do_not():
    with pytest.warns(UserWarning, match="looks scaled to \\[0, 1\\]"):
        check_images(np.full((1, 8, 8, 3), 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(np.zeros((1, 8, 8, 3)))


def test_nested_lists_are_accepted_as_arrays():
    images = check_images(np.zeros((2, 6, 6, 3), dtype=np.uint8).tolist())
    assert isinstance(images, ImageArray) and images.array.shape == (2, 6, 6, 3)


# --- files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ext, mode", [(".jpg", "RGB"), (".png", "RGBA"), (".png", "L"), (".bmp", "RGB"),
                  (".gif", "P"), (".webp", "RGB")],
)
def test_every_supported_format_decodes_to_rgb(tmp_path, ext, mode):
    path = tmp_path / f"img{ext}"
    Image.new(mode, (11, 7), color=100 if mode in ("L", "P") else (10, 20, 30, 255)[: len(mode)]).save(path)
    pixels = decode_image(path)
    assert pixels.shape == (7, 11, 3) and pixels.dtype == np.uint8


def test_paths_and_arrays_give_the_same_pixels(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])

    for source in (paths, [Path(p) for p in paths], np.asarray(paths)):
        files = check_images(source)
        assert isinstance(files, ImageFiles)
        from_files = np.concatenate([b.images for b in files.batches(2, (16, 16))])
        from_array = np.concatenate([b.images for b in check_images(X).batches(2, (16, 16))])
        np.testing.assert_array_equal(from_files, from_array)


def test_pandas_series_and_single_column_frame_of_paths(image_folder):
    pd = pytest.importorskip("pandas")
    paths, _, _ = load_image_folder(image_folder)
    assert isinstance(check_images(pd.Series(paths)), ImageFiles)
    assert isinstance(check_images(pd.DataFrame({"path": paths})), ImageFiles)
    with pytest.raises(ValueError, match="DataFrame with 2 columns"):
        check_images(pd.DataFrame({"a": paths, "b": paths}))


def test_a_single_path_string_is_rejected_with_the_fix(image_folder):
    with pytest.raises(ValueError, match="single path.*wrap it in a list"):
        check_images(str(image_folder / "cats" / "cats.0.png"))


def test_missing_files_are_reported_before_any_decoding(image_folder):
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    files = check_images(paths + ["/no/such/a.jpg", "/no/such/b.jpg"])
    with pytest.raises(FileNotFoundError, match="2 of the 8 image paths.*'/no/such/a.jpg'"):
        next(files.batches(4, (8, 8)))


def test_an_undecodable_file_is_named(tmp_path, image_folder):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))] + [str(bad)]
    with pytest.raises(ValueError, match="Cannot read image file .*broken.jpg.*X\\[6\\].*on_error='skip'"):
        list(check_images(paths).batches(4, (8, 8)))


def test_skip_marks_unreadable_files_and_decodes_the_rest(tmp_path, image_folder):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    good = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    paths = good[:2] + [str(bad), "/missing.png"] + good[2:]
    batches = list(check_images(paths).batches(3, (8, 8), on_error="skip"))
    failed = [f for b in batches for f in b.failed]
    assert [(index, path) for index, path, _ in failed] == [(2, str(bad)), (3, "/missing.png")]
    stacked = np.concatenate([b.images for b in batches])
    assert np.isnan(stacked[[2, 3]]).all()
    assert np.isfinite(np.delete(stacked, [2, 3], axis=0)).all()


def test_prefetch_keeps_order_and_reraises_producer_errors():
    assert list(prefetch(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        list(prefetch(failing()))


def test_prefetch_stops_its_thread_when_abandoned():
    import threading

    before = threading.active_count()
    iterator = prefetch(iter(range(1000)), depth=1)
    next(iterator)
    iterator.close()
    assert threading.active_count() == before
