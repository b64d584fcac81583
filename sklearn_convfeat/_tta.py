"""Test-time augmentation of extracted features: the views of each image, averaged.

A view is a deterministic transform of the resized float32 batch ``(N, H, W, 3)``,
applied after resizing and before preprocessing. ``tta="flip"`` has two views, the
image and its horizontal mirror; ``tta="dihedral"`` the 8 symmetries of the square
(for scenes seen from above). Each view runs through the base and is pooled on its
own; the features of an image are the mean of its views' features.
"""

import numpy as np

TTA_OPTIONS = ("flip", "dihedral")


def tta_views(tta, image_size=None):
    """The names of the views ``tta`` averages, the unaugmented image first.

    ``"dihedral"`` is the 8 symmetries of the square for square ``image_size``, the 4
    that keep the shape (flips and half turn) otherwise.
    """
    if tta is None:
        return ("image",)
    if tta == "flip":
        return ("image", "mirror")
    square = image_size is not None and image_size[0] == image_size[1]
    return VIEWS if square else SHAPE_KEEPING_VIEWS


# The symmetries of the square (the dihedral group D4) as transforms of (N, H, W, 3):
# the identity and the mirror first (the flip views), then the rest of the flips and
# the half turn (which keep a non-square image's shape), then the quarter turns and
# the diagonal reflections (square images only).
_VIEW_TRANSFORMS = {
    "image": lambda x: x,
    "mirror": lambda x: x[:, :, ::-1],
    "flip_vertical": lambda x: x[:, ::-1],
    "rot180": lambda x: x[:, ::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, -1, axes=(1, 2)),
    "transpose": lambda x: x.transpose(0, 2, 1, 3),
    "transverse": lambda x: x[:, ::-1, ::-1].transpose(0, 2, 1, 3),
}
VIEWS = tuple(_VIEW_TRANSFORMS)
#: Views that keep the shape of a non-square image.
SHAPE_KEEPING_VIEWS = VIEWS[:4]


def view_of(images, view):
    """The batch ``images`` (N, H, W, 3) as ``view`` (one of ``VIEWS``) sees it."""
    if view == "image":
        return images
    try:
        transform = _VIEW_TRANSFORMS[view]
    except KeyError:
        raise ValueError(f"`view` must be one of {VIEWS}. Got {view!r} instead.") from None
    # Contiguous: exported runtimes and the cache want plain C-ordered arrays.
    return np.ascontiguousarray(transform(images))


def view_key(key, view):
    """The feature-cache key of ``view`` of the image whose content key is ``key``.

    The unaugmented view keeps the image's own key, so that extractors with and
    without ``tta`` share those entries; None (an unreadable file) stays None.
    """
    if view == "image" or key is None:
        return key
    return f"{key}-{view}"


def mean_over_views(features):
    """The mean of the views' float32 feature rows (a sequence of equal-shape arrays)."""
    if len(features) == 1:
        return np.asarray(features[0], dtype=np.float32)
    # Scaled before the sum: rows of unreadable files (NaN pixels, NaN in the end)
    # may hold huge values, whose sum would overflow with a warning.
    weight = np.float32(1 / len(features))
    total = np.asarray(features[0], dtype=np.float32) * weight
    for rows in features[1:]:
        total += np.asarray(rows, dtype=np.float32) * weight
    return total


def averaged_over_views(function, views):
    """``function`` of a batch → the mean over ``views`` of ``function`` of each view.

    One forward pass per view and batch, each at most the batch's size: memory stays
    bounded by ``batch_size`` and each image is decoded once.
    """
    if tuple(views) == ("image",):
        return function
    return lambda images: mean_over_views(
        [np.asarray(function(view_of(images, view))) for view in views]
    )
