"""Pixels from files and arrays: decoding (EXIF, 16-bit, JPEG draft), RGB, resizing.

Every image this package reads, for extraction, fine-tuning, Grad-CAM or overlays,
is decoded by :func:`decode_image` and resized by :func:`resize`.
"""

import os

import numpy as np

# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, still at least the
# target size) only when it is at least this many times larger than the target on both
# sides. Set from the accuracy measured in benchmarks/bench_memory.py (see user guide).
DRAFT_MIN_REDUCTION = 2
# "0" decodes every JPEG at full resolution, as other tools do (exact pixels, more time
# and memory for large photos).
DRAFT_ENV_VAR = "SKLEARN_CONVFEAT_JPEG_DRAFT"
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def to_rgb(images):
    """(N, H, W), (N, H, W, 1|3|4) numbers → float32 (N, H, W, 3); alpha is dropped.

    uint16 images are 16-bit: scaled to [0, 255] by :func:`scale_16bit`.
    """
    images = np.asarray(images)
    if images.dtype == np.uint16:
        images = scale_16bit(images)
    images = images.astype(np.float32, copy=False)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images[..., :3])


def scale_16bit(pixels):
    """16-bit pixel values → uint8: ``round(v * 255 / 65535)``, clipped to [0, 65535]."""
    pixels = np.clip(pixels, 0, 65535).astype(np.uint32)
    return ((pixels + 128) // 257).astype(np.uint8)


def resize(images, size):
    """Bilinear (antialiased) resize of float32 (N, H, W, 3) to ``size``; no-op if equal."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    import tensorflow as tf

    resized = tf.image.resize(images, size, method="bilinear", antialias=True)
    resized = resized.numpy().astype(np.float32, copy=False)
    # Each output is a weighted mean (weights >= 0) of inputs, so it lies in their
    # range: clip the float rounding that lands a hair above 255 and trips the
    # extractor's range warning on load_images' own output.
    return np.clip(resized, np.min(images), np.max(images), out=resized)


def decode_image(path, size=None):
    """Read one image file as upright uint8 (H, W, 3) RGB (first frame of an animation).

    Every file this package reads (extraction, fine-tuning, Grad-CAM, overlays) goes
    through here. The EXIF orientation is applied, as photo viewers do, and 16-bit
    images (``I;16`` PNG or TIFF) are scaled from [0, 65535] to [0, 255] by
    :func:`scale_16bit` instead of being clipped to white.

    ``size`` is the (height, width) the image is about to be resized to, or None for
    full resolution. With a size, a JPEG at least :data:`DRAFT_MIN_REDUCTION` times
    larger on both sides is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, still at
    least ``size`` (PIL's draft mode): memory and time then stay bounded whatever
    the photo's resolution, and the pixels differ slightly from those of a full
    decode followed by the same resize. ``SKLEARN_CONVFEAT_JPEG_DRAFT=0`` in the
    environment turns this off.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        orientation = _orientation(image)
        if size is not None and image.format == "JPEG":
            height, width = size
            if orientation in _SWAPS_AXES:  # the file is stored turned by 90 degrees
                height, width = width, height
            reduction = min(image.width // width, image.height // height)
            if reduction >= DRAFT_MIN_REDUCTION and os.environ.get(DRAFT_ENV_VAR) != "0":
                image.draft(None, (width, height))
        if orientation != 1:
            ImageOps.exif_transpose(image, in_place=True)
        if image.mode in _SIXTEEN_BIT_MODES:
            grey = scale_16bit(np.asarray(image))
            return np.repeat(grey[..., np.newaxis], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


def upright_size(path):
    """(height, width) of an image file as :func:`decode_image` returns it."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        if _orientation(image) in _SWAPS_AXES:
            return width, height
        return height, width


def _orientation(image):
    """The EXIF orientation of an opened image, 1 (upright) when absent or unreadable."""
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  a malformed EXIF block: the pixels are still good
        return 1
