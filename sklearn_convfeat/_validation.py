"""Parameter rules shared by the estimators that run the VGG16 base on images."""

import os
from numbers import Integral

from ._backbone import N_BLOCKS, VGG16_LAYERS, min_image_size, resolve_layer
from ._compat import Interval, StrOptions


class IntInterval(Interval):
    """``Interval(Integral, ...)`` that refuses booleans (True is an Integral)."""

    def __init__(self, left, right, *, closed):
        super().__init__(Integral, left, right, closed=closed)

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


BASE_PARAMETER_CONSTRAINTS = {
    "weights": [StrOptions({"imagenet"}), None, str, os.PathLike],
    "layer": [StrOptions(set(VGG16_LAYERS)), IntInterval(1, N_BLOCKS, closed="both")],
    "image_size": [tuple, list, IntInterval(1, None, closed="left")],
    "preprocessing": [StrOptions({"vgg16", "rescale"})],
    "batch_size": [IntInterval(1, None, closed="left")],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
}


def check_image_size(image_size, layer):
    """``image_size`` as a (height, width) tuple of ints large enough for ``layer``."""
    if isinstance(image_size, Integral):
        image_size = (image_size, image_size)
    if (
        len(image_size) != 2
        or not all(isinstance(side, Integral) and not isinstance(side, bool) for side in image_size)
    ):
        raise ValueError(
            "`image_size` must be an int or a (height, width) pair of ints. "
            f"Got {image_size!r} instead."
        )
    height, width = (int(side) for side in image_size)
    smallest = min_image_size(layer)
    if height < smallest or width < smallest:
        raise ValueError(
            f"`image_size` must be at least ({smallest}, {smallest}) for "
            f"layer={resolve_layer(layer)!r}: VGG16 halves the size at each pooling "
            f"layer up to there. Got {tuple(image_size)!r}; use a larger size "
            "(the book uses (150, 150)) or cut the base lower."
        )
    return height, width
