"""Parameter rules shared by the estimators that run a convolutional base on images."""

import os
from numbers import Integral

from ._architectures import PREPROCESSING_MODES
from ._backbone import get_base
from ._backbones import resolve_backbone
from ._compat import HasMethods, Interval, StrOptions
from ._keras_state import backbone_token
from ._stages import N_STAGES
from ._weights import resolve_weights


class IntInterval(Interval):
    """``Interval(Integral, ...)`` that refuses booleans (True is an Integral)."""

    def __init__(self, left, right, *, closed):
        super().__init__(Integral, left, right, closed=closed)

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


BASE_PARAMETER_CONSTRAINTS = {
    "backbone": [str, HasMethods(["get_layer", "get_weights"])],
    "weights": [StrOptions({"imagenet"}), None, str, os.PathLike],
    "layer": [str, IntInterval(1, N_STAGES, closed="both")],
    "image_size": [tuple, list, IntInterval(1, None, closed="left"), None],
    "preprocessing": [StrOptions(set(PREPROCESSING_MODES))],
    "batch_size": [IntInterval(1, None, closed="left")],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
}


def _size_pair(image_size):
    if isinstance(image_size, Integral):
        image_size = (image_size, image_size)
    if (
        len(image_size) != 2
        or not all(isinstance(side, Integral) and not isinstance(side, bool) for side in image_size)
    ):
        raise ValueError(
            "`image_size` must be an int, a (height, width) pair of ints, or None for "
            f"the network's native size. Got {image_size!r} instead."
        )
    return tuple(int(side) for side in image_size)


def resolve_base(estimator, seed):
    """Resolve ``backbone``, ``weights``, ``image_size`` and ``preprocessing``.

    Returns ``(source, entry, image_size, preprocessing)``: the weights source, its
    cached base, the (height, width) images are resized to, and the preprocessing
    mode ``"auto"`` stands for.
    """
    image_size = estimator.image_size
    if image_size is not None:
        image_size = _size_pair(image_size)
    network, image_size = resolve_backbone(estimator.backbone, image_size)
    source = resolve_weights(estimator.weights, seed, network=network)
    entry = get_base(source)
    if image_size is None:
        if entry.fixed_size is None:
            raise ValueError(
                "`image_size=None` means the network's native size, but the backbone "
                "model takes any size. Pass image_size=(height, width)."
            )
        image_size = entry.fixed_size
    preprocessing = estimator.preprocessing
    if preprocessing == "auto":
        preprocessing = source.plugin.default_preprocessing(source)
    return source, entry, image_size, preprocessing


def check_image_size(entry, image_size, layer):
    """Raise a clear error when ``image_size`` is too small for ``layer``; its map shape."""
    return entry.check_image_size(image_size, layer)


# The parameters the features depend on: changed after fit, they need a new fit.
FEATURE_PARAMETERS = (
    "backbone", "weights", "layer", "pooling", "image_size", "preprocessing", "backend", "quantize",
    "random_state",
)


def feature_settings(estimator):
    """The values of ``FEATURE_PARAMETERS`` as ``estimator`` holds them, comparable."""
    settings = {}
    for name in FEATURE_PARAMETERS:
        value = getattr(estimator, name)
        if name == "backbone":
            value = backbone_token(value)
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif name == "random_state" and not (value is None or isinstance(value, int)):
            value = "a RandomState instance"  # consumed by fit: compared as "set"
        settings[name] = value
    if settings["weights"] is not None:
        settings.pop("random_state")  # only seeds random weights
    return settings


def check_settings_unchanged(estimator, fitted):
    """Refuse to compute features with parameters set after fit (set_params).

    ``fitted`` is what :func:`feature_settings` gave at fit, or None for an
    estimator pickled before this check existed.
    """
    if fitted is None:
        return
    now = feature_settings(estimator)
    changed = [name for name in fitted if now.get(name) != fitted[name]]
    if changed:
        shown = ", ".join(f"{name}={fitted[name]!r} -> {now.get(name)!r}" for name in changed)
        raise ValueError(
            f"The parameters {changed} of this {type(estimator).__name__} changed after "
            f"fit ({shown}). Features always come from the parameters the extractor "
            "was fitted with, so call fit again (it learns nothing and is quick, "
            "except INT8 calibration) before transform."
        )
