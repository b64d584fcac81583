"""Test-time augmentation of extracted features: the views of each image, averaged.

A view is a deterministic transform of the resized float32 batch ``(N, H, W, 3)``,
applied after resizing and before preprocessing. ``tta="flip"`` has two views, the
image and its horizontal mirror. Each view runs through the base and is pooled on its
own; the features of an image are the mean of its views' features.
"""

import numpy as np

TTA_OPTIONS = ("flip",)
_VIEWS = {None: ("image",), "flip": ("image", "mirror")}


def tta_views(tta):
    """The names of the views ``tta`` averages, the unaugmented image first."""
    return _VIEWS[tta]


def view_of(images, view):
    """The batch ``images`` (N, H, W, 3) as ``view`` sees it."""
    if view == "image":
        return images
    if view == "mirror":
        # Contiguous: exported runtimes and the cache want plain C-ordered arrays.
        return np.ascontiguousarray(images[:, :, ::-1])
    raise ValueError(f"`view` must be 'image' or 'mirror'. Got {view!r} instead.")


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
