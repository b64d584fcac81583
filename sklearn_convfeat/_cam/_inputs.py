"""Inputs of the public functions: images, targets, heatmaps, batches."""

import os
import warnings
from numbers import Integral

import numpy as np

from .._decode import decode_image, resize, to_rgb
from .._images import ImageArray, ImageFiles, check_images


def check_X(X, adapter):
    """(ImageArray or ImageFiles, whether X was one image)."""
    single = False
    if isinstance(X, (str, os.PathLike)):
        X, single = [X], True
    elif hasattr(X, "ndim") and hasattr(X, "shape") and not hasattr(X, "iloc"):
        X = np.asarray(X)
        if X.ndim == 2 or (X.ndim == 3 and X.shape[-1] in (1, 3, 4)):
            X, single = X[np.newaxis], True
    with warnings.catch_warnings():
        if adapter.plain:
            # A Keras model's input is preprocessed as it expects, [0, 1] included.
            warnings.filterwarnings("ignore", message="X looks scaled to")
        images = check_images(X)
    if isinstance(images, ImageFiles):
        images.check_exist()
    return images, single


def batches(adapter, images, batch_size):
    """(rows, model input size) in batches; rows of one batch share the input size."""
    for start in range(0, len(images), batch_size):
        rows = np.arange(start, min(start + batch_size, len(images)))
        if adapter.size is not None:
            yield rows, adapter.size
            continue
        by_size = {}
        for row in rows:  # a model that takes any size runs each image at its own
            by_size.setdefault(tuple(images.image_shape(row)), []).append(row)
        for size, group in by_size.items():
            yield np.asarray(group), size


def original(images, index):
    """Image ``index`` at its own size, RGB float32, for display."""
    if isinstance(images, ImageArray):
        return to_rgb(images.array[index : index + 1])[0]
    return decode_image(images.paths[index]).astype(np.float32)


def resolve_targets(adapter, target, n_images):
    """Class index per image; -1 is the predicted class."""
    if isinstance(target, (list, tuple, np.ndarray)) and np.ndim(target) == 1:
        if len(target) != n_images:
            raise ValueError(
                f"`target` must be one value for all images or one per image: X has "
                f"{n_images} images, target has {len(target)} values."
            )
        return np.asarray([_target_index(adapter, t) for t in target], dtype=int)
    return np.full(n_images, _target_index(adapter, target), dtype=int)


def _target_index(adapter, target):
    classes = adapter.classes
    for index, label in enumerate(classes.tolist()):
        if label == target:
            return index
    if target is None or (isinstance(target, str) and target == "predicted"):
        return -1
    is_index = isinstance(target, Integral) and not isinstance(target, (bool, np.bool_))
    if is_index and 0 <= target < len(classes):  # not a label: an index
        return int(target)
    if adapter.plain:
        raise ValueError(
            f"`target` must be an output index of the Keras model, 0 to "
            f"{len(classes) - 1}. Got {target!r}. Leave target='predicted' to explain "
            "the predicted class."
        )
    raise ValueError(
        f"`target` must be one of the model's classes {classes.tolist()!r} or an index "
        f"0 to {len(classes) - 1} into them. Got {target!r}. Leave target='predicted' "
        "to explain the predicted class."
    )


def check_heatmap(heatmap, name):
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or 0 in heat.shape:
        raise ValueError(
            f"`{name}` must be one heatmap of shape (height, width). Got shape "
            f"{heat.shape}; cam() returns a batch: pass one of them, e.g. heatmaps[0]."
        )
    if not np.isfinite(heat).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return heat


def check_heatmaps(heatmaps, images, single):
    if single and np.ndim(heatmaps) == 2:
        heatmaps = [heatmaps]
    if len(heatmaps) != len(images):
        raise ValueError(
            f"`heatmaps` must hold one heatmap per image of X: X has {len(images)} "
            f"images, heatmaps has {len(heatmaps)}. Pass what cam(model, X) returned."
        )
    return [check_heatmap(heat, f"heatmaps[{i}]") for i, heat in enumerate(heatmaps)]


def package(heatmaps, single):
    """One map for one image; an array when all share a size; else a list."""
    if single:
        return heatmaps[0]
    if len({heat.shape for heat in heatmaps}) == 1:
        return np.stack(heatmaps)
    return heatmaps


def resize_map(heat, size):
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == tuple(size):
        return heat
    return resize(heat[np.newaxis, :, :, np.newaxis], tuple(size))[0, :, :, 0]


def normalise(heat):
    """Divided by its maximum, float32 in [0, 1]; all zeros without positive values."""
    peak = heat.max()
    if not peak > 0:
        return np.zeros(heat.shape, dtype=np.float32)
    return np.clip(heat / peak, 0.0, 1.0).astype(np.float32)
