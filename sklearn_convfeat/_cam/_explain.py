"""The loop behind ``cam``: batches of images → a method's heatmaps, with optional
noise averaging (SmoothGrad) and test-time augmentation (aug_smooth)."""

import numpy as np
from sklearn.utils import Bunch

from .._decode import resize
from ._base import LayerBatch
from ._inputs import batches, normalise, resize_map

# aug_smooth: horizontal flip × zoom on the centre, each mapped back.
AUGMENTATIONS = ((False, 1.0), (True, 1.0), (False, 1.15), (True, 1.15))


def explain(adapter, images, targets, method, *, max_channels=64, batch_size=32,
            n_samples=None, noise=0.15, aug_smooth=False, random_state=None):
    """Bunch(heatmaps: list at each image's size, targets: class index per image,
    proba: (n, n_classes) on the intact images)."""
    rng = np.random.default_rng(random_state if not hasattr(random_state, "randint")
                                else random_state.randint(2**31))
    n_images = len(images)
    heatmaps = [None] * n_images
    used = np.empty(n_images, dtype=int)
    proba = np.empty((n_images, len(adapter.classes)))
    for rows, size in batches(adapter, images, batch_size):
        x = adapter.inputs(images, rows, size)
        _, logits = adapter.forward(x)
        filled = adapter.fill_targets(targets[rows], logits)
        used[rows] = filled
        proba[rows] = adapter.to_proba(logits)
        options = (method, adapter, filled, max_channels, batch_size)
        if aug_smooth:
            coarse = _augmented(x, options, n_samples, noise, rng)
        elif n_samples is not None:
            coarse = _noisy(x, options, n_samples, noise, rng)
        else:
            coarse = _coarse(x, *options)
        for row, heat in zip(rows, coarse):
            heatmaps[row] = normalise(resize_map(heat, images.image_shape(row)))
    return Bunch(heatmaps=heatmaps, targets=used, proba=proba)


def _coarse(x, method, adapter, targets, max_channels, batch_size):
    if method.uses_gradients:
        maps, grads, _, _ = adapter.gradients(x, targets)
        grads = np.asarray(grads, dtype=np.float64)
    else:
        maps, _ = adapter.forward(x)
        grads = None
    batch = LayerBatch(x, np.asarray(maps, dtype=np.float64), grads, targets, adapter,
                       max_channels, batch_size)
    return method.coarse(batch)


def _at_input_size(x, options):
    coarse = _coarse(x, *options).astype(np.float32)
    return resize(coarse[..., np.newaxis], x.shape[1:3])[..., 0]


def _noisy(x, options, n_samples, noise, rng):
    """SmoothGrad: the mean map over copies with Gaussian noise of standard deviation
    ``noise`` × each image's value range (Smilkov et al. 2017; Omeiza et al. 2019)."""
    spread = (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
    total = np.zeros(x.shape[:3])
    for _ in range(n_samples):
        noisy = (x + rng.normal(size=x.shape) * noise * spread).astype(np.float32)
        total += _at_input_size(noisy, options)
    return total / n_samples


def _augmented(x, options, n_samples, noise, rng):
    """The mean map over horizontal flips and a 1.15× zoom on the centre, each map
    put back where its pixels came from (cells outside a zoomed crop are averaged
    over the views that saw them)."""
    height, width = x.shape[1:3]
    total = np.zeros(x.shape[:3])
    seen = np.zeros(x.shape[:3])
    for flip, zoom in AUGMENTATIONS:
        crop_h, crop_w = round(height / zoom), round(width / zoom)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        view = x[:, top : top + crop_h, left : left + crop_w]
        if zoom != 1.0:
            view = resize(view, (height, width))
        if flip:
            view = view[:, :, ::-1]
        view = np.ascontiguousarray(view, dtype=np.float32)
        heat = (_noisy(view, options, n_samples, noise, rng) if n_samples is not None
                else _at_input_size(view, options))
        if flip:
            heat = heat[:, :, ::-1]
        if zoom != 1.0:
            heat = resize(np.ascontiguousarray(heat[..., np.newaxis], np.float32),
                          (crop_h, crop_w))[..., 0]
        total[:, top : top + crop_h, left : left + crop_w] += heat
        seen[:, top : top + crop_h, left : left + crop_w] += 1
    return total / seen
