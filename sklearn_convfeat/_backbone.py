"""The VGG16 convolutional base: its layers, where it can be cut, and a compiled forward.

Bases are kept in a small process-wide cache keyed by their weights, so clones made by
GridSearchCV, unpickled estimators and repeated ``transform`` calls share one model
instead of rebuilding 14.7 million parameters each time.
"""

import os
import threading
from numbers import Integral

from ._compat import Interval, StrOptions, validate_params
from ._lru import LRUCache
from ._weights import build_vgg16_base, content_sha256

# (name, kind, filters) in network order; "pool" halves height and width.
_VGG16_SPEC = (
    ("block1_conv1", "conv", 64),
    ("block1_conv2", "conv", 64),
    ("block1_pool", "pool", 64),
    ("block2_conv1", "conv", 128),
    ("block2_conv2", "conv", 128),
    ("block2_pool", "pool", 128),
    ("block3_conv1", "conv", 256),
    ("block3_conv2", "conv", 256),
    ("block3_conv3", "conv", 256),
    ("block3_pool", "pool", 256),
    ("block4_conv1", "conv", 512),
    ("block4_conv2", "conv", 512),
    ("block4_conv3", "conv", 512),
    ("block4_pool", "pool", 512),
    ("block5_conv1", "conv", 512),
    ("block5_conv2", "conv", 512),
    ("block5_conv3", "conv", 512),
    ("block5_pool", "pool", 512),
)
VGG16_LAYERS = tuple(name for name, _, _ in _VGG16_SPEC)
N_BLOCKS = 5


def resolve_layer(layer):
    """A layer name, from a name or a block number N (meaning ``block{N}_pool``)."""
    if isinstance(layer, Integral) and not isinstance(layer, bool):
        return f"block{int(layer)}_pool"
    return layer


def layer_index(layer):
    return VGG16_LAYERS.index(resolve_layer(layer))


def min_image_size(layer):
    """Smallest height/width whose feature map at ``layer`` is still at least 1×1."""
    n_pools = sum(kind == "pool" for _, kind, _ in _VGG16_SPEC[: layer_index(layer) + 1])
    return 2**n_pools


def feature_map_shape(layer, image_size):
    """(height, width, channels) of the output of ``layer`` for ``image_size`` inputs."""
    height, width = image_size
    channels = 3
    for _, kind, filters in _VGG16_SPEC[: layer_index(layer) + 1]:
        if kind == "pool":
            height, width = height // 2, width // 2
        channels = filters
    return height, width, channels


@validate_params(
    {
        "layer": [StrOptions(set(VGG16_LAYERS)), Interval(Integral, 1, N_BLOCKS, closed="both")],
        "image_size": [tuple, list, Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def count_flops(layer="block5_pool", image_size=(150, 150)):
    """Floating-point operations of the VGG16 base up to ``layer`` for one image.

    Multiply-adds × 2 of its 3×3 'same' convolutions; pooling, bias and ReLU are left
    out (< 0.1 % of the work). This is the arithmetic an exact forward pass cannot
    avoid, so ``count_flops / (the machine's FLOP/s)`` bounds its images per second.

    Parameters
    ----------
    layer : str or int, default="block5_pool"
        A VGG16 layer name, or a block number 1-5 meaning ``"block{N}_pool"``.
    image_size : (int, int) or int, default=(150, 150)
        (height, width) of the input.

    Returns
    -------
    flops : int

    Examples
    --------
    >>> from sklearn_convfeat import count_flops
    >>> round(count_flops(5, (150, 150)) / 1e9, 2)  # GFLOP per 150x150 image
    13.23
    >>> count_flops("block1_conv1", 10)
    345600
    """
    if isinstance(image_size, Integral):
        image_size = (image_size, image_size)
    height, width = image_size
    channels = 3
    flops = 0
    for _, kind, filters in _VGG16_SPEC[: layer_index(layer) + 1]:
        if kind == "pool":
            height, width = height // 2, width // 2
        else:
            flops += 2 * height * width * 9 * channels * filters
            channels = filters
    return flops


def preprocess(images, preprocessing):
    """Scale RGB images in [0, 255] as the base expects.

    ``"vgg16"`` is ``keras.applications.vgg16.preprocess_input`` (RGB→BGR, ImageNet mean
    subtracted, no scaling: what the ImageNet weights were trained on); ``"rescale"`` is
    the book's ``x / 255``.
    """
    import keras

    images = keras.ops.convert_to_tensor(images)  # numpy input would be edited in place
    if preprocessing == "vgg16":
        return keras.applications.vgg16.preprocess_input(images)
    return images / 255.0


class _CachedBase:
    def __init__(self, model, sha256):
        self.model = model
        self.sha256 = sha256
        self.compiled = {}  # compiled functions of this base, by what they compute
        self.lock = threading.Lock()

    def compiled_function(self, key, build):
        with self.lock:
            function = self.compiled.get(key)
            if function is None:
                function = self.compiled[key] = build()
            return function


_BASES = LRUCache(max_entries=3)


def check_keras_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "sklearn_convfeat runs on Keras' TensorFlow backend; KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Unset KERAS_BACKEND or set it to "
            "'tensorflow' before importing keras."
        )


def get_base(source):
    """The (cached) VGG16 base for a :class:`~._weights.WeightsSource` and its sha256.

    A weights file is cached under its path, size and modification time: a file
    overwritten in place is read again, never served from the old copy.
    """
    check_keras_backend()

    def build():
        model = build_vgg16_base(source)
        return _CachedBase(model, content_sha256(model))

    return _BASES.get_or_build((source, _file_signature(source.path)), build)


def _file_signature(path):
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:  # gone: let the build raise its clear error
        return None
    return status.st_size, status.st_mtime_ns


def clear_cache():
    """Forget every cached base (frees their memory)."""
    _BASES.clear()


def cut_model(base, layer):
    """The Keras model from the base's input to the output of ``layer``."""
    import keras

    return keras.Model(base.input, base.get_layer(layer).output, name=f"vgg16_{layer}")


def get_forward(source, layer, preprocessing, pooling):
    """A compiled function: float32 RGB images (N, H, W, 3) in [0, 255] → features.

    The result is a numpy float32 array, (N, h·w·c) for ``"flatten"`` and (N, c) for
    ``"avg"``/``"max"``. One ``tf.function`` per (weights, layer, preprocessing,
    pooling), traced once for any image size and batch size.
    """
    entry = get_base(source)
    key = (resolve_layer(layer), preprocessing, pooling)
    return entry.compiled_function(key, lambda: _compile_forward(entry.model, *key))


def get_segment(source, start, stop, preprocessing, capture=()):
    """A compiled function running the base from after ``start`` through ``stop``.

    Its input is float32 RGB images in [0, 255] when ``start`` is None, else the maps
    ``start`` outputs; it returns ``{layer: numpy maps}`` for ``stop`` and each layer of
    ``capture`` it passes. This lets a feature cache resume a deeper cut from a cached
    shallower one, and keep the maps it goes by.
    """
    entry = get_base(source)
    names = VGG16_LAYERS[0 if start is None else layer_index(start) + 1 : layer_index(stop) + 1]
    wanted = tuple(name for name in names if name in capture or name == stop)
    key = ("segment", start, stop, preprocessing if start is None else None, wanted)
    return entry.compiled_function(
        key, lambda: _compile_segment(entry.model, start, names, wanted, preprocessing)
    )


def _compile_segment(base, start, names, wanted, preprocessing):
    import tensorflow as tf

    layers = [base.get_layer(name) for name in names]
    channels = 3 if start is None else _VGG16_SPEC[layer_index(start)][2]

    def run(x):
        if start is None:
            x = preprocess(x, preprocessing)
        outputs = {}
        for name, layer in zip(names, layers):
            x = layer(x)
            if name in wanted:
                outputs[name] = x
        return outputs

    compiled = tf.function(
        run,
        input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)],
        reduce_retracing=True,
    )
    return lambda x: {name: maps.numpy() for name, maps in compiled(x).items()}


def pool(maps, pooling):
    """Feature maps (N, h, w, c) → features, as ``ConvFeatureExtractor`` pools them."""
    import tensorflow as tf

    if pooling == "avg":
        return tf.reduce_mean(maps, axis=(1, 2))
    if pooling == "max":
        return tf.reduce_max(maps, axis=(1, 2))
    return tf.reshape(maps, (tf.shape(maps)[0], -1))


def pool_array(maps, pooling):
    """:func:`pool` for numpy feature maps (N, h, w, c), as float32 rows."""
    import numpy as np

    maps = np.asarray(maps, dtype=np.float32)
    if pooling == "avg":
        return maps.mean(axis=(1, 2), dtype=np.float32)
    if pooling == "max":
        return maps.max(axis=(1, 2))
    return maps.reshape(len(maps), -1)


def _compile_forward(base, layer, preprocessing, pooling):
    import tensorflow as tf

    cut = cut_model(base, layer)

    def features(images):
        return pool(cut(preprocess(images, preprocessing), training=False), pooling)

    compiled = tf.function(
        features,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
        reduce_retracing=True,
    )
    return lambda images: compiled(images).numpy()


class MapsRunner:
    """Runs the base cut at one layer: ``maps(images)`` is what subclasses compute.

    ``images`` are float32 RGB ``(N, H, W, 3)`` in [0, 255]; ``maps`` returns the raw
    float32 feature maps ``(N, h, w, c)`` and ``features(images, pooling)`` the rows
    ``ConvFeatureExtractor.transform`` gives.
    """

    def maps(self, images):
        raise NotImplementedError

    def features(self, images, pooling):
        return pool_array(self.maps(images), pooling)


class TensorFlowRunner(MapsRunner):
    """The base run by TensorFlow; ``model`` is the shared Keras base (do not edit it)."""

    def __init__(self, source, layer, preprocessing):
        self.source = source
        self.layer = resolve_layer(layer)
        self.preprocessing = preprocessing
        self.model = get_base(source).model

    def maps(self, images):
        flat = get_forward(self.source, self.layer, self.preprocessing, "flatten")(images)
        return flat.reshape(len(flat), *feature_map_shape(self.layer, images.shape[1:3]))

    def features(self, images, pooling):
        # Pooled inside the compiled function: the features transform has always given.
        return get_forward(self.source, self.layer, self.preprocessing, pooling)(images)

    def segment(self, start, capture=()):
        """:func:`get_segment` from after ``start`` to this runner's layer."""
        return get_segment(self.source, start, self.layer, self.preprocessing, capture)
