"""The convolutional base: built once per network and weights, cut at a layer, compiled.

Bases are kept in a small process-wide cache keyed by their weights, so clones made by
GridSearchCV, unpickled estimators and repeated ``transform`` calls share one model
instead of rebuilding it each time. What a base's graph says (cut points, stages,
shapes) is read once per base, in :mod:`._stages`.
"""

import os
import threading
from numbers import Integral

from ._architectures import preprocess
from ._backbones import resolve_backbone
from ._compat import HasMethods, Interval, validate_params
from ._fast_ops import with_fast_ops
from ._lru import LRUCache
from ._pooling import pool, pool_array  # noqa: F401  pool: re-exported
from ._stages import N_STAGES, BaseGraph, model_flops, spatial_shapes
from ._weights import build_base, content_sha256, resolve_weights

DEFAULT_PROBE_SIZE = (224, 224)


def is_layer_number(layer):
    return isinstance(layer, Integral) and not isinstance(layer, bool)


class CachedBase:
    """A built base, its weights' sha256, its graph, and functions compiled for it."""

    def __init__(self, model, sha256, source):
        self.model = model
        self.sha256 = sha256
        self.source = source
        fixed = tuple(model.inputs[0].shape[1:3])
        self.fixed_size = None if None in fixed else fixed
        probe = (
            self.fixed_size or source.plugin.native_size(source) or DEFAULT_PROBE_SIZE
        )
        self.graph = BaseGraph(
            model, probe, stage_ends=source.plugin.stage_ends(source, model)
        )
        # Tokens before the patch tokens of a transformer's output; None: a convnet.
        self.prefix_tokens = source.plugin.prefix_tokens(source)
        self.compiled = {}  # compiled functions of this base, by what they compute
        self._shapes = {}
        self.lock = threading.Lock()

    @property
    def network(self):
        return self.source.network

    def compiled_function(self, key, build):
        with self.lock:
            function = self.compiled.get(key)
            if function is None:
                function = self.compiled[key] = build()
            return function

    def resolve_layer(self, layer):
        """The name of the operation ``layer`` (a name, or a stage number 1-5) means."""
        stages = self.graph.stage_ends
        if is_layer_number(layer):
            self.check_single_output(
                ", or `layer` must name the layer to cut it at",
                f"Got layer={layer!r} instead: pass "
                f"{' or '.join(f'layer={name!r}' for name in self.graph.output_names)} "
                "(or any other layer name) to choose where to cut.",
            )
            if int(layer) == N_STAGES:  # the end of the base, however deep it goes
                return stages.get(N_STAGES, self.graph.names[-1])
            if int(layer) in stages:
                return stages[int(layer)]
            raise ValueError(
                f"`layer` must be one of the stages of {self.network}, "
                f"{sorted(stages)} (the end of stage N is downsampled 2^N times): "
                f"{self._stage_list()}. Got layer={layer!r} instead: pick one of those, "
                "or a layer name."
            )
        if isinstance(layer, str) and layer in self.graph.position:
            return layer
        raise ValueError(
            f"`layer` must be a stage number ({self._stage_list()}) or the name of a "
            f"layer of {self.network}. Got {layer!r} instead."
        )

    def check_single_output(self, rule, fix):
        """Refuse a multi-output backbone where one of its outputs would be picked
        silently: "`backbone` must have a single output{rule}: … {fix}"."""
        outputs = self.graph.output_names
        if len(outputs) > 1:
            raise ValueError(
                f"`backbone` must have a single output{rule}: {self.network} has "
                f"{len(outputs)} outputs ({', '.join(map(repr, outputs))}). {fix}"
            )

    def pooling(self, pooling, layer):
        """The pooling value that pools ``layer``'s output as ``pooling`` (the
        parameter) asks: the name itself for a convnet's maps, a
        :class:`~._pooling.TokenPooling` for a transformer's tokens. Raises a clear
        ``ValueError`` when the pooling means nothing for this network."""
        return self.source.plugin.pooling(self.source, pooling, layer, self)

    def _stage_list(self):
        return ", ".join(f"{n}={name!r}" for n, name in self.graph.stage_ends.items())

    def map_shape(self, layer, image_size):
        """(h, w, c) of ``layer``'s output for ``image_size`` inputs ((tokens, width)
        for a transformer's tokens, (width,) for its image embedding); ``ValueError``
        when the network cannot take that size."""
        key = (layer, tuple(image_size))
        with self.lock:
            shape = self._shapes.get(key)
        if shape is None:
            import keras

            cut = keras.Model(self.model.inputs, self.graph.output(layer))
            operation = self.graph.operations[self.graph.position[layer]]
            shape = spatial_shapes(cut, [operation], tuple(image_size))[layer]
            if len(shape) == 2 and self.prefix_tokens is not None:
                # Tokens: counted from the patch grid (a layer may declare one too many).
                shape = (self.source.plugin.token_count(self.source, image_size), shape[1])
            if len(shape) != 3 and self.prefix_tokens is None:
                raise ValueError(
                    f"`layer` must output a feature map (height, width, channels); "
                    f"{layer!r} of {self.network} outputs shape {shape}."
                )
            with self.lock:
                self._shapes[key] = shape
        return shape

    def check_image_size(self, image_size, layer):
        """Raise a clear error when ``image_size`` is too small for the cut."""
        if self.fixed_size is not None and tuple(image_size) != self.fixed_size:
            raise ValueError(
                f"`image_size` must be {self.fixed_size} for {self.network}, whose input "
                f"size is fixed. Got {tuple(image_size)!r} instead."
            )
        try:
            return self.map_shape(layer, image_size)
        except ValueError as exc:
            if "feature map" in str(exc):
                raise
            smallest = self._smallest_size(layer)
            raise ValueError(
                f"`image_size` must be at least ({smallest}, {smallest}) for "
                f"layer={layer!r} of {self.network}: the network downsamples the "
                f"image up to there. Got {tuple(image_size)!r}; use a larger size "
                "(the book uses (150, 150)) or cut the base lower."
            ) from None

    def _smallest_size(self, layer):
        low, high = 1, 4096
        while low < high:
            middle = (low + high) // 2
            try:
                self.map_shape(layer, (middle, middle))
                high = middle
            except ValueError:
                low = middle + 1
        return low


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
    """The (cached) base of a :class:`~._weights.WeightsSource`.

    A weights file is cached under its path, size and modification time: a file
    overwritten in place is read again, never served from the old copy.
    """
    check_keras_backend()

    def build():
        model = build_base(source)
        return CachedBase(model, content_sha256(model), source)

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


def fresh_copy(entry, input_size=None):
    """An independent copy of a cached base, same weights and layer names, to train."""
    return build_base(entry.source, input_size, weights=entry.model.get_weights())


def cut_model(entry, layer):
    """The Keras model from the base's input to the output of ``layer``."""
    import keras

    return keras.Model(
        entry.model.inputs, entry.graph.output(layer), name=f"{entry.model.name}_{layer}"
    )


@validate_params(
    {
        "layer": [str, Interval(Integral, 1, N_STAGES, closed="both")],
        "image_size": [tuple, list, Interval(Integral, 1, None, closed="left")],
        "backbone": [str, HasMethods(["get_layer", "get_weights"])],
    },
    prefer_skip_nested_validation=True,
)
def count_flops(layer=5, image_size=(150, 150), *, backbone="vgg16"):
    """Floating-point operations of a convolutional base up to ``layer`` for one image.

    Multiply-adds × 2 of its convolutions (standard, depthwise, separable), dense
    layers and, in a transformer's blocks, its attention's two matrix products, read
    from the network's graph; normalisation, activations, pooling and
    additions are left out (a few % of the work at most). This is the arithmetic an
    exact forward pass cannot avoid, so ``count_flops / (the machine's FLOP/s)``
    bounds its images per second.

    Parameters
    ----------
    layer : str or int, default=5
        A layer name, or a stage number 1-5 (for VGG16, ``"block{N}_pool"``).
    image_size : (int, int) or int, default=(150, 150)
        (height, width) of the input.
    backbone : str or keras.Model, default="vgg16"
        A keras.applications convnet name, or a model of one's own.

    Returns
    -------
    flops : int

    Examples
    --------
    >>> from sklearn_convfeat import count_flops
    >>> round(count_flops(5, (150, 150)) / 1e9, 2)  # GFLOP per 150x150 VGG16 image
    13.23
    >>> count_flops("block1_conv1", 10)
    345600
    >>> round(count_flops(5, 224, backbone="resnet50") / 1e9, 2)
    7.71
    """
    if isinstance(image_size, Integral):
        image_size = (image_size, image_size)
    network, _ = resolve_backbone(backbone, tuple(image_size))
    source = resolve_weights(None, seed=0, network=network)
    entry = get_base(source)
    name = entry.resolve_layer(layer)
    entry.check_image_size(tuple(image_size), name)
    return int(model_flops(cut_model(entry, name), (*image_size, 3)))


def blank_input(base, preprocessing):
    """The RGB pixel the Keras ``base`` sees as 0 once ``preprocessing`` and the base's
    own input normalisation (a keras-hub preset's ImageConverter) have been applied."""
    import keras
    import numpy as np

    from ._architectures import blank_pixel

    for operation in base.operations[:2]:
        if isinstance(operation, keras.layers.Rescaling):  # x * scale + offset = 0
            scale = np.asarray(operation.scale, dtype=np.float32)
            offset = np.asarray(operation.offset, dtype=np.float32)
            return np.broadcast_to(-offset / scale, (3,)).astype(np.float32)
    return blank_pixel(preprocessing)


def get_forward(source, layer, preprocessing, pooling):
    """A function: float32 RGB images (N, H, W, 3) in [0, 255] → features.

    The result is a numpy float32 array, (N, h·w·c) for ``"flatten"`` and (N, c) for
    ``"avg"``/``"max"``: the maps of :func:`get_maps` pooled by :func:`pool_array`.
    """
    entry = get_base(source)
    key = ("forward", entry.resolve_layer(layer), preprocessing, pooling)
    maps = get_maps(source, layer, preprocessing)
    return entry.compiled_function(key, lambda: lambda images: pool_array(maps(images), pooling))


def get_maps(source, layer, preprocessing):
    """A compiled function: float32 RGB images (N, H, W, 3) in [0, 255] → float32 maps.

    The maps (N, h, w, c) as a numpy array. One ``tf.function`` per (weights, layer,
    preprocessing), traced once for any image size and batch size.
    """
    entry = get_base(source)
    key = ("maps", entry.resolve_layer(layer), preprocessing)
    return entry.compiled_function(key, lambda: _compile_maps(entry, *key[1:]))


def get_segment(source, start, stop, preprocessing, capture=()):
    """A compiled function running the base from after ``start`` through ``stop``.

    Its input is float32 RGB images in [0, 255] when ``start`` is None, else the maps
    ``start`` outputs (a cut point); it returns ``{layer: numpy maps}`` for ``stop`` and
    each layer of ``capture`` it passes. This lets a feature cache resume a deeper
    cut from a cached shallower one, and keep the maps it goes by.
    """
    entry = get_base(source)
    graph = entry.graph
    wanted = tuple(
        name for name in graph.names
        if (name == stop or name in capture)
        and (start is None or graph.precedes(start, name))
        and not graph.precedes(stop, name)
    )
    key = ("segment", start, stop, preprocessing if start is None else None, wanted)
    return entry.compiled_function(
        key, lambda: _compile_segment(entry, start, wanted, preprocessing)
    )


def _compile_segment(entry, start, wanted, preprocessing):
    import keras
    import tensorflow as tf

    graph = entry.graph
    inputs = entry.model.inputs[0] if start is None else graph.output(start)
    segment = with_fast_ops(keras.Model(inputs, [graph.output(name) for name in wanted]))
    signature = tf.TensorSpec((None,) * (len(inputs.shape) - 1) + (inputs.shape[-1],), tf.float32)

    def run(x):
        if start is None:
            x = preprocess(x, preprocessing)
        outputs = segment(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(wanted, outputs))

    compiled = tf.function(run, input_signature=[signature], reduce_retracing=True)
    return lambda x: {name: maps.numpy() for name, maps in compiled(x).items()}


def _compile_maps(entry, layer, preprocessing):
    import tensorflow as tf

    cut = with_fast_ops(cut_model(entry, layer))

    def maps(images):
        return cut(preprocess(images, preprocessing), training=False)

    compiled = tf.function(
        maps,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
        reduce_retracing=True,
    )
    return lambda images: compiled(images).numpy()


class MapsRunner:
    """Runs the base cut at one layer: ``maps(images)`` is what subclasses compute.

    ``images`` are float32 RGB ``(N, H, W, 3)`` in [0, 255]; ``maps`` returns the raw
    float32 feature maps ``(N, h, w, c)`` (a transformer's tokens ``(N, tokens,
    width)``) and ``features(images, pooling)`` the rows
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
        self.entry = get_base(source)
        self.layer = self.entry.resolve_layer(layer)
        self.preprocessing = preprocessing
        self.model = self.entry.model

    def maps(self, images):
        return get_maps(self.source, self.layer, self.preprocessing)(images)

    def segment(self, start, capture=()):
        """:func:`get_segment` from after ``start`` to this runner's layer."""
        return get_segment(self.source, start, self.layer, self.preprocessing, capture)
