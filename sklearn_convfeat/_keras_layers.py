"""The Keras layers FineTuner's network puts before the base: augmentation, preprocessing."""

from functools import cache
from numbers import Real

# The book's ImageDataGenerator settings (§5.2.5), by their Keras 2 names.
AUGMENT_DEFAULTS = {
    "rotation_range": 40,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "horizontal_flip": True,
    "fill_mode": "nearest",
}
_FILL_MODES = ("reflect", "wrap", "nearest", "constant")


def check_augment(augment):
    """The augmentation settings as a dict, or None when off."""
    if augment is False:
        return None
    if augment is True:
        return dict(AUGMENT_DEFAULTS)
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"`augment` has unknown keys {unknown}. Valid keys are "
            f"{sorted(AUGMENT_DEFAULTS)} (the book's ImageDataGenerator settings); "
            "e.g. augment={'rotation_range': 20}."
        )
    settings = {**AUGMENT_DEFAULTS, **augment}
    if settings["fill_mode"] not in _FILL_MODES:
        raise ValueError(
            f"`augment['fill_mode']` must be one of {_FILL_MODES}. "
            f"Got {settings['fill_mode']!r} instead."
        )
    for key in ("rotation_range", "width_shift_range", "height_shift_range",
                "shear_range", "zoom_range"):
        value = settings[key]
        if not isinstance(value, Real) or isinstance(value, bool) or value < 0:
            raise ValueError(
                f"`augment[{key!r}]` must be a number >= 0 (0 turns it off). "
                f"Got {value!r} instead."
            )
    return settings


def augmentation_layers(settings, seed):
    """The book's ImageDataGenerator as Keras 3 layers (active in training only)."""
    import keras

    layers = keras.layers
    fill = settings["fill_mode"]
    steps = []
    if settings["rotation_range"]:
        steps.append(layers.RandomRotation(
            settings["rotation_range"] / 360.0, fill_mode=fill, seed=seed))
    if settings["width_shift_range"] or settings["height_shift_range"]:
        steps.append(layers.RandomTranslation(
            settings["height_shift_range"], settings["width_shift_range"],
            fill_mode=fill, seed=seed + 1))
    if settings["shear_range"]:
        steps.append(layers.RandomShear(
            x_factor=settings["shear_range"], fill_mode=fill, seed=seed + 2))
    if settings["zoom_range"]:
        steps.append(layers.RandomZoom(settings["zoom_range"], fill_mode=fill, seed=seed + 3))
    if settings["horizontal_flip"]:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(steps, name="augmentation")


@cache
def preprocessing_layer_class():
    """The base's input preprocessing as a serialisable layer (registered on first use)."""
    import keras

    from ._architectures import preprocess

    @keras.saving.register_keras_serializable(package="sklearn_convfeat")
    class VGGPreprocessing(keras.layers.Layer):
        """RGB images in [0, 255] → the base's input, by preprocessing ``mode``."""

        def __init__(self, mode="vgg16", **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, images):
            return preprocess(images, self.mode)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return VGGPreprocessing


@cache
def token_pooling_layer_class():
    """A transformer's tokens → one vector, as the extractor pools them (registered
    on first use): the head's input in FineTuner's network for a transformer base."""
    import keras

    from ._pooling import TokenPooling, pool

    @keras.saving.register_keras_serializable(package="sklearn_convfeat")
    class TokenPoolingLayer(keras.layers.Layer):
        """(batch, tokens, width) → (batch, features) by ``pooling`` (a
        :class:`~sklearn_convfeat._pooling.TokenPooling` name) after ``prefix_tokens``
        class and register tokens."""

        def __init__(self, pooling="cls+avg", prefix_tokens=1, **kwargs):
            super().__init__(**kwargs)
            self.pooling = pooling
            self.prefix_tokens = prefix_tokens

        def call(self, tokens):
            return pool(tokens, TokenPooling(self.pooling, self.prefix_tokens))

        def compute_output_shape(self, input_shape):
            width = input_shape[-1]
            return (input_shape[0], 2 * width if self.pooling == "cls+avg" else width)

        def get_config(self):
            return {
                **super().get_config(),
                "pooling": self.pooling,
                "prefix_tokens": self.prefix_tokens,
            }

    return TokenPoolingLayer
