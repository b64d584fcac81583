"""Image inputs: arrays or file paths, checked once and then served batch by batch.

Everything that reads ``X`` for the estimators goes through :func:`check_images`, which
returns an :class:`ImageArray` or an :class:`ImageFiles`. Both yield float32 RGB batches
in [0, 255] at a requested size, so memory is bounded by the batch, not by N.
"""

import os
import queue
import threading
import warnings
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.utils.validation import check_array

from ._decode import decode_image, resize, to_rgb, upright_size

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


_EXPECTED_X = (
    "X must be a batch of images of shape (n_images, height, width, channels) with "
    "1, 3 or 4 channels, (n_images, height, width) for grey images, or a sequence of "
    "image file paths"
)


class UnreadableImageWarning(UserWarning):
    """Some image files could not be decoded and were skipped."""


def load_image_folder(directory, *, extensions=IMAGE_EXTENSIONS):
    """List the images of a class-per-folder directory.

    The layout is the one ``keras.utils.image_dataset_from_directory`` reads:
    ``directory/<class name>/**/<image file>``. Classes are the sub-folder names in
    sorted order; files are found recursively and listed in sorted order.

    Parameters
    ----------
    directory : str or os.PathLike
        The folder holding one sub-folder per class.
    extensions : tuple of str, default=(".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
        File endings (case-insensitive) that count as images.

    Returns
    -------
    paths : ndarray of str, shape (n_images,)
        Image file paths, usable as ``X`` by every estimator of this package.
    y : ndarray of int, shape (n_images,)
        Index of each image's class in ``class_names``.
    class_names : list of str
        The class (sub-folder) names, sorted.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sklearn_convfeat import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cats/a.png", "cats/b.png", "dogs/c.jpg"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(root / name)
    >>> paths, y, class_names = load_image_folder(root)
    >>> class_names, y.tolist(), [pathlib.Path(p).name for p in paths]
    (['cats', 'dogs'], [0, 0, 1], ['a.png', 'b.png', 'c.jpg'])
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"`directory` must be an existing folder with one sub-folder per class. "
            f"Got {directory!r}, which is not a folder."
        )
    suffixes = tuple(ext.lower() for ext in extensions)
    class_names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_paths = []
        for root, dirs, files in os.walk(os.path.join(directory, class_name)):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            class_paths.extend(
                os.path.join(root, name)
                for name in sorted(files)
                if name.lower().endswith(suffixes) and not name.startswith(".")
            )
        paths.extend(class_paths)
        labels.extend([label] * len(class_paths))
    if len(class_names) < 2:
        raise ValueError(
            f"`directory` {directory!r} must hold at least two class sub-folders "
            f"(directory/<class>/<images>). Found {len(class_names)}: {class_names}."
        )
    if not paths:
        raise ValueError(
            f"`directory` {directory!r} holds no image files ({', '.join(suffixes)}) "
            f"in its class sub-folders {class_names}."
        )
    return np.asarray(paths, dtype=object), np.asarray(labels), class_names


def load_images(paths, *, image_size):
    """Decode image files into one array, as the estimators of this package see them.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Image files (JPEG, PNG, BMP, GIF, WebP).
    image_size : (int, int) or int
        (height, width) every image is resized to (bilinear, antialiased).

    Returns
    -------
    images : ndarray of shape (n_images, height, width, 3), dtype float32
        RGB pixel values in [0, 255].

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sklearn_convfeat import load_images
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
    >>> Image.new("L", (40, 30), color=128).save(path)
    >>> images = load_images([path], image_size=(15, 20))
    >>> images.shape, images.dtype, float(images.max())
    ((1, 15, 20, 3), dtype('float32'), 128.0)
    """
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    images = check_images(paths, input_name="paths")
    if not isinstance(images, ImageFiles):
        raise TypeError(
            "`paths` must be a sequence of image file paths. Got an array of pixels: "
            "it needs no decoding."
        )
    images.check_exist()
    return images.take(np.arange(len(images)), tuple(image_size))


def check_images(X, *, input_name="X"):
    """Validate ``X`` as images and return an :class:`ImageArray` or :class:`ImageFiles`.

    Raises a ``ValueError`` or ``TypeError`` (``FileNotFoundError`` for missing files)
    that says what was expected, what was received and how to fix it.
    """
    if isinstance(X, (ImageArray, ImageFiles)):
        return X
    if sparse.issparse(X):
        raise TypeError(
            f"{_EXPECTED_X}. Got a sparse matrix: sparse input is not supported; "
            "images must be dense arrays."
        )
    if isinstance(X, (AbstractSet, Mapping)):
        raise TypeError(
            f"{_EXPECTED_X}. Got a {type(X).__name__} of {len(X)} items: it has no "
            "fixed order, so the rows of the result would not match y. Pass a list in "
            f"the order of y, e.g. sorted({input_name})."
        )
    _check_foreign_array(X, input_name)
    if not hasattr(X, "__len__") and hasattr(X, "__array__"):
        X = np.asarray(X)
    if hasattr(X, "__len__") and len(X) == 0:
        raise ValueError(
            f"{input_name} is empty (shape {getattr(X, 'shape', (0,))}): at least one "
            "image is required."
        )
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(
            f"{_EXPECTED_X}. Got a single path {X!r}: wrap it in a list, [path]."
        )
    if hasattr(X, "iloc"):  # pandas: a Series or a one-column DataFrame of paths
        if getattr(X, "ndim", 1) == 2:
            if X.shape[1] != 1:
                raise ValueError(
                    f"{_EXPECTED_X}. Got a DataFrame with {X.shape[1]} columns; pass "
                    "the one column that holds the paths."
                )
            X = X.iloc[:, 0]
        X = X.to_numpy()
    if not hasattr(X, "dtype"):
        X = list(X)
        if X and all(isinstance(item, (str, os.PathLike)) for item in X):
            return ImageFiles([os.fspath(item) for item in X])
        _check_path_items(X, input_name)
        try:
            X = np.asarray(X)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{_EXPECTED_X}. Got a ragged sequence: {exc}") from exc
    if X.dtype.kind in "OUS" and X.ndim == 1:
        items = list(X)
        if all(isinstance(item, (str, os.PathLike)) for item in items):
            return ImageFiles([os.fspath(item) for item in items])
        _check_path_items(items, input_name)
    return ImageArray(_check_image_array(X, input_name))


def _check_foreign_array(X, input_name):
    """Refuse tensors of other libraries (their ``dtype`` is not NumPy's)."""
    dtype = getattr(X, "dtype", None)
    if dtype is None or isinstance(dtype, np.dtype) or hasattr(X, "to_numpy"):
        return  # NumPy-like, or pandas (whose extension dtypes are handled above)
    kind = f"{type(X).__module__}.{type(X).__qualname__}"
    raise TypeError(
        f"{_EXPECTED_X}, as a NumPy array. Got a {kind} of dtype {dtype}: convert it "
        f"first, e.g. {input_name}.numpy() for a TensorFlow (or CPU PyTorch) tensor, "
        f"or np.asarray({input_name})."
    )


def _check_path_items(items, input_name):
    """In a sequence that holds paths, name the first item that is not one."""
    if not any(isinstance(item, (str, bytes, os.PathLike)) for item in items):
        return  # not paths at all: numbers, nested lists...
    for index, item in enumerate(items):
        if isinstance(item, bytes):
            raise TypeError(
                f"{_EXPECTED_X}. Got bytes paths: {input_name}[{index}] is {item!r}. "
                f"Decode them to str first, e.g. [os.fsdecode(p) for p in {input_name}]."
            )
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"{input_name}[{index}] is {item!r} ({type(item).__name__}), not a path: "
                f"every item of a sequence of image paths must be a str or os.PathLike. "
                "If it marks a missing image, drop the rows with missing paths (and "
                "their labels) first."
            )


def _check_image_array(X, input_name):
    if X.dtype.kind == "b":
        raise ValueError(
            f"{_EXPECTED_X}, with pixel values in [0, 255] (uint8 or float). Got a "
            "boolean array: convert it, e.g. X.astype('uint8') * 255."
        )
    if X.dtype.kind == "c":  # scikit-learn's message would print every value
        raise ValueError(
            f"Complex data not supported: {_EXPECTED_X}, with real pixel values in "
            f"[0, 255]. Got a complex array (dtype {X.dtype}, shape {X.shape}): pass "
            "real images, e.g. np.abs(X) or X.real."
        )
    # scikit-learn's own checks first (complex, NaN/inf, empty): users know their words.
    X = check_array(
        X,
        dtype=None if X.dtype.kind in "uif" else np.float32,
        allow_nd=True,
        ensure_2d=False,
        ensure_all_finite=True,
        input_name=input_name,
    )
    if X.ndim not in (3, 4):
        raise ValueError(f"{_EXPECTED_X}. Got an array of shape {X.shape}.")
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{_EXPECTED_X}. Got an array of shape {X.shape} with {X.shape[-1]} "
            "channels: give grey (1), RGB (3) or RGBA (4) images, channels last."
        )
    if X.ndim == 3 and X.shape[-1] in (3, 4):
        raise ValueError(
            f"{_EXPECTED_X}. Got an array of shape {X.shape}, which reads as one "
            f"{'RGB' if X.shape[-1] == 3 else 'RGBA'} image rather than "
            f"{X.shape[0]} grey images {X.shape[-1]} pixels wide: pass one image as "
            "X[np.newaxis], or add a channel axis to grey images."
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"{_EXPECTED_X}. Got images of size 0: shape {X.shape}.")
    _warn_about_pixel_range(X, input_name)
    return X


def _warn_about_pixel_range(X, input_name):
    """Warn when pixel values are not in the range the dtype rule expects.

    The rule: uint16 images are 16-bit, [0, 65535] scaled to [0, 255] (as 16-bit
    files are); every other dtype is taken as [0, 255], values used as given.
    """
    if X.dtype == np.uint8:
        return
    low, high = X.min(), X.max()
    if X.dtype == np.uint16:
        if 0 < high <= 255:
            warnings.warn(
                f"{input_name} is uint16 with its largest value {high}: uint16 images "
                "are read as 16-bit, their range [0, 65535] scaled to [0, 255], so "
                "these come out nearly black. If they hold 8-bit pixel values, pass "
                f"{input_name}.astype('uint8').",
                UserWarning,
                stacklevel=5,
            )
        return
    if low < 0 or high > 255:
        warnings.warn(
            f"{input_name} has pixel values outside [0, 255] (from {low:g} to "
            f"{high:g}); images are expected in [0, 255], the range of uint8 pixels, "
            "and are used as given. Rescale them to [0, 255], or pass 16-bit images "
            "as uint16 (scaled from [0, 65535]).",
            UserWarning,
            stacklevel=5,
        )
    elif X.dtype.kind == "f" and 0 <= low and 0 < high <= 1.0:
        warnings.warn(
            f"{input_name} looks scaled to [0, 1] (its largest value is "
            f"{high:g}); images are expected in [0, 255], the range of uint8 "
            "pixels. Multiply by 255, or pass uint8 images.",
            UserWarning,
            stacklevel=5,
        )


@dataclass
class Batch:
    """``images[k]`` is image ``start + k``; ``failed`` lists (index, path, reason)."""

    start: int
    images: np.ndarray
    failed: list = field(default_factory=list)


class ImageSource:
    """What :class:`ImageArray` and :class:`ImageFiles` share."""

    def as_rows(self, size):
        """The images as a row-indexable array: ``view[rows]`` decodes those rows.

        Keras ``PyDataset``s of minibatches index it with arrays of row numbers.
        """
        return _RowsAtSize(self, size)


class _RowsAtSize:
    def __init__(self, images, size):
        self.images = images
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, rows):
        return self.images.take(np.asarray(rows), self.size)


class ImageArray(ImageSource):
    """Images given as one numeric array (already validated)."""

    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def image_shape(self, index):
        return self.array.shape[1:3]

    def take(self, rows, size):
        """float32 RGB images ``rows`` at ``size``."""
        return resize(to_rgb(self.array[rows]), size)

    def subset(self, rows):
        """The images ``rows`` (a sequence of indices), as an image source."""
        return ImageArray(self.array[np.asarray(rows)])

    def batches(self, batch_size, size, on_error="raise"):
        for start in range(0, len(self.array), batch_size):
            chunk = to_rgb(self.array[start : start + batch_size])
            yield Batch(start, resize(chunk, size))


class ImageFiles(ImageSource):
    """Images given as file paths; decoded lazily, one batch at a time."""

    def __init__(self, paths):
        if not paths:
            raise ValueError(f"{_EXPECTED_X}. Got an empty sequence of paths.")
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def image_shape(self, index):
        """(height, width) of image ``index`` as decoded: upright (EXIF applied)."""
        return upright_size(self.paths[index])

    def missing(self):
        return [i for i, path in enumerate(self.paths) if not os.path.isfile(path)]

    def check_exist(self):
        folders = [i for i, path in enumerate(self.paths) if os.path.isdir(path)]
        if folders:
            first = folders[0]
            raise IsADirectoryError(
                f"X[{first}] = {self.paths[first]!r} is a folder, not an image file "
                f"({len(folders)} of the {len(self.paths)} paths in X are folders). "
                "Pass the paths of the images it holds: load_image_folder(folder) "
                "lists those of a class-per-folder directory."
            )
        missing = self.missing()
        if missing:
            shown = ", ".join(repr(self.paths[i]) for i in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise FileNotFoundError(
                f"{len(missing)} of the {len(self.paths)} image paths in X do not "
                f"exist: {shown}{more}. Fix the paths (relative paths are resolved "
                f"from the current directory, {os.getcwd()!r})."
            )

    def subset(self, rows):
        """The images ``rows`` (a sequence of indices), as an image source."""
        return ImageFiles([self.paths[row] for row in rows])

    def take(self, rows, size):
        """float32 RGB images ``rows`` at ``size``, decoded now."""
        return self._decode(0, [self.paths[row] for row in rows], size, "raise").images

    def batches(self, batch_size, size, on_error="raise"):
        if on_error == "raise":
            self.check_exist()  # fail before any compute, not after hours of it
        for start in range(0, len(self.paths), batch_size):
            yield self._decode(start, self.paths[start : start + batch_size], size, on_error)

    def _decode(self, start, paths, size, on_error):
        # One image at a time, JPEGs drafted near ``size``: memory stays bounded by
        # the batch at ``size`` plus one source image, whatever the photos' size.
        images = np.zeros((len(paths), *size, 3), dtype=np.float32)
        failed = []
        for offset, path in enumerate(paths):
            try:
                pixels = decode_image(path, size=size)
            except Exception as exc:  # PIL raises many types for corrupt files
                if on_error == "raise":
                    raise ValueError(
                        f"Cannot read image file {path!r} (X[{start + offset}]): "
                        f"{exc}. Remove or replace it, or pass on_error='skip' to "
                        "skip unreadable files."
                    ) from exc
                failed.append((start + offset, path, str(exc)))
                images[offset] = np.nan
                continue
            images[offset] = resize(to_rgb(pixels[np.newaxis]), size)[0]
        return Batch(start, images, failed)


def readable_batches(images, batch_size, size, on_error="raise"):
    """``(indices, decoded, failed)`` for each batch of ``images``, decoded ahead.

    ``indices`` and ``decoded`` leave out the files that could not be read, which
    ``failed`` lists as (index, path, reason); indices count from 0 over ``images``.
    """
    for batch in prefetch(images.batches(batch_size, size, on_error)):
        failed = {index for index, _, _ in batch.failed}
        keep = [k for k in range(len(batch.images)) if batch.start + k not in failed]
        yield [batch.start + k for k in keep], batch.images[keep], batch.failed


def prefetch(iterable, depth=2):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    Decoding (PIL releases the GIL) then overlaps with the forward pass.
    """
    items = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put((item, None))
        except BaseException as exc:  # re-raised in the consumer
            items.put((None, exc))
        items.put((done, None))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def run_batches(
    function, images, *, n_outputs, image_size, batch_size, on_error="raise",
    verbose=0, out=None,
):
    """``function`` over every batch of ``images``; rows of unreadable files are NaN.

    ``function`` maps float32 RGB images ``(n, H, W, 3)`` in [0, 255] at
    ``image_size`` to ``n`` rows of ``n_outputs`` values. Decoding runs one batch
    ahead in a background thread. ``out`` (e.g. a memmap) is filled in place when
    given. Returns ``(outputs, skipped)``, ``skipped`` listing (index, path, reason).
    """
    if out is None:
        out = np.empty((len(images), n_outputs), dtype=np.float32)
    skipped = []
    progress = progress_bar(len(images), batch_size, verbose)
    for batch in prefetch(images.batches(batch_size, image_size, on_error)):
        rows = slice(batch.start, batch.start + len(batch.images))
        out[rows] = np.asarray(function(batch.images)).reshape(len(batch.images), -1)
        for index, _, _ in batch.failed:
            out[index] = np.nan
        skipped.extend(batch.failed)
        if progress is not None:
            progress.add(1)
    return out, skipped


def progress_bar(n_images, batch_size, verbose):
    """A Keras progress bar over the batches of ``n_images``, or None when quiet."""
    if not verbose:
        return None
    import keras

    return keras.utils.Progbar(-(-n_images // batch_size), unit_name="batch")
