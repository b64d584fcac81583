"""Augmentation at cached cost: variants of the frozen prefix's output, drawn per epoch.

A frozen prefix sees the same image every epoch, so its output is computed once. Two
augmentations keep that saving:

- the horizontal flip, exactly: the prefix runs once on each image and once on its
  mirror, and each epoch draws one of the two maps per image;
- translation, approximately: the drawn map is shifted by up to ``shift`` cells with
  zero padding (a zero is "no activation" after the ReLU/pooling that ends a VGG
  stage). One cell of a map downsampled 16 times is 16 image pixels; a shifted map is
  not exactly the map of the shifted image near the borders, where the prefix's
  receptive fields would have seen other pixels.
"""

import numpy as np

#: ``augment`` values that select augmentation of the cached maps.
CACHED_AUGMENTATIONS = ("flip", "cached")
# Cells "cached" shifts the frozen prefix's map by, at most, in each direction.
CACHED_SHIFT = 1


def cached_shift(augment):
    """Cells of translation ``augment`` asks of the cached maps."""
    return CACHED_SHIFT if augment == "cached" else 0


class MapAugmentation:
    """Picks one variant (image or mirror) per sample and shifts it at random.

    Called with a batch of shape ``(n, n_variants, height, width, channels)`` (or
    ``(n, n_variants, d)`` for flat features, which are never shifted) and a numpy
    generator; returns ``(n, height, width, channels)``.
    """

    def __init__(self, shift=0):
        self.shift = shift

    def __call__(self, variants, rng):
        n = len(variants)
        chosen = variants[np.arange(n), rng.integers(0, variants.shape[1], n)]
        if not self.shift or chosen.ndim != 4:
            return chosen
        return shift_maps(chosen, rng.integers(-self.shift, self.shift + 1, (n, 2)))


def shift_maps(maps, offsets):
    """Each map of ``(n, H, W, C)`` moved by its ``(dy, dx)`` cells, zeros shifted in."""
    _, height, width, _ = maps.shape
    shifted = np.zeros_like(maps)
    for out, source, (dy, dx) in zip(shifted, maps, offsets):
        out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = (
            source[max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)]
        )
    return shifted
