"""Augmentation at cached cost: variants of the frozen prefix's output, drawn per epoch.

A frozen prefix sees the same image every epoch, so its output is computed once. Two
augmentations keep that saving:

- exact symmetries of the images: the prefix runs once on each variant of each image
  (the image and its mirror; with ``"dihedral"`` the 8 symmetries of the square, 4 for
  a non-square image), and each epoch draws one variant's map per image;
- translation, approximately: the drawn map is shifted by up to ``shift`` cells with
  zero padding (a zero is "no activation" after the ReLU/pooling that ends a VGG
  stage). One cell of a map downsampled 16 times is 16 image pixels; a shifted map is
  not exactly the map of the shifted image near the borders, where the prefix's
  receptive fields would have seen other pixels.
"""

import numpy as np

from ._tta import tta_views, view_of

#: ``augment`` values that select augmentation of the cached maps.
CACHED_AUGMENTATIONS = ("flip", "cached", "dihedral")
# Cells "cached" and "dihedral" shift the frozen prefix's map by, at most, in each
# direction.
CACHED_SHIFT = 1


def cached_shift(augment):
    """Cells of translation ``augment`` asks of the cached maps."""
    return CACHED_SHIFT if augment in ("cached", "dihedral") else 0


def cached_views(augment, image_size):
    """The views (``_tta.VIEWS``) whose prefix maps ``augment`` caches per image:
    those of the matching test-time augmentation."""
    return tta_views("dihedral" if augment == "dihedral" else "flip", image_size)


class QuarterTurns:
    """End-to-end training's share of ``"dihedral"``: each image turned by a random
    multiple of 90° (of 180° when not square); the mirror and the shift are the
    network's own augmentation layers, so together they draw from the whole group.

    Called with a batch of images ``(n, H, W, 3)`` and a numpy generator.
    """

    def __call__(self, images, rng):
        square = images.shape[1] == images.shape[2]
        turns = ("image", "rot90", "rot180", "rot270") if square else ("image", "rot180")
        drawn = rng.integers(0, len(turns), len(images))
        out = np.array(images, dtype=np.float32, copy=True)
        for index, turn in enumerate(turns[1:], start=1):
            rows = np.flatnonzero(drawn == index)
            if len(rows):
                out[rows] = view_of(out[rows], turn)
        return out


class MapAugmentation:
    """Picks one cached variant per sample and shifts it at random.

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
