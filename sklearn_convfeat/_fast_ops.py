"""Layers TensorFlow runs slowly on a CPU, swapped for equivalent fast ones.

ConvNeXt writes its 7×7 depthwise convolutions as ``Conv2D(groups=channels)``. Keras 3
sends every grouped convolution to XLA, whose CPU code has no fast kernel for it: those
18 layers take ~77 % of ConvNeXtTiny's forward pass, 19× slower than
``tf.nn.depthwise_conv2d`` on the same arrays (benchmarks/bench_backbones.py). A clone
that computes them as depthwise convolutions, reading the same variables, gives the
same maps (within 2e-7 relative) at 3-4× the speed. For exports (``for_export``), exact
GELU is also written with ``erf`` (tf2onnx has no ``Erfc``), and ``Normalization``
layers with their statistics as graph constants (tf2onnx turns the captured tensors
into extra model inputs).

Batch normalization at inference is a per-channel scale and shift: folded into the
convolution before it (kernel and bias), it costs nothing, where Keras computes it as
two passes over every activation map. MobileNet, EfficientNet, NASNet, ResNet and
Xception run 1.1-1.5x faster on TensorFlow this way (``bench_backbones.py``'s
``tensorflow-unfolded`` backend measures the difference). The layers are swapped in
the compiled copies only: the shared Keras base, which FineTuner trains and ``cam()``
differentiates, keeps its batch norms.
"""

import weakref

# Off only to measure what folding gains (bench_backbones.py, tensorflow-unfolded).
FOLD_BATCH_NORMS = True


def _is_depthwise_grouped(layer):
    import keras

    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups > 1
        and layer.data_format == "channels_last"
        and layer.kernel.shape[2] == 1  # one input channel per group
    )


def _is_exact_gelu(layer):
    import keras

    return type(layer) is keras.layers.Activation and layer.activation is keras.activations.gelu


def _layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _single_input(layer):
    """The tensors ``layer`` was called on, or None for a layer called more than once
    (or an input layer): such a layer is left as it is."""
    import tensorflow as tf

    try:
        return tf.nest.flatten(layer.input)
    except (AttributeError, ValueError):
        return None


def foldable_batch_norms(model):
    """``{batch norm: convolution}`` of the BatchNormalization layers ``model`` can fold
    into the convolution before them: a plain ``Conv2D``, ``DepthwiseConv2D`` or
    ``SeparableConv2D`` without activation whose output nothing else reads and which is not an output."""
    import keras

    consumers, producer = {}, {}
    for layer in _layers(model):
        for tensor in _single_input(layer) or ():
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
        if _single_input(layer) is not None:
            producer[id(layer.output)] = layer
    outputs = {id(tensor) for tensor in model.outputs}
    pairs = {}
    for layer in _layers(model):
        inputs = _single_input(layer)
        if type(layer) is not keras.layers.BatchNormalization or not inputs:
            continue
        conv = producer.get(id(inputs[0]))
        if (
            type(conv) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                           keras.layers.SeparableConv2D)
            and getattr(conv, "groups", 1) == 1
            and conv.activation is keras.activations.linear
            and conv.data_format == "channels_last"
            and layer.axis in (-1, len(inputs[0].shape) - 1)
            and consumers[id(inputs[0])] == 1
            and id(inputs[0]) not in outputs
            and conv.dtype_policy.name == layer.dtype_policy.name == "float32"
        ):
            pairs[layer] = conv
    return pairs


# BatchNormalization layer -> its convolution folded with it, shared by every compiled
# function of the base (one copy of the folded weights, not one per cut).
_FOLDED = weakref.WeakKeyDictionary()


def folded_convolution(conv, batch_norm):
    """A copy of ``conv`` computing ``batch_norm(conv(x))`` at inference: the kernel
    scaled by ``gamma / sqrt(variance + epsilon)`` per output channel, the bias
    ``(bias - mean) * scale + beta``. Exact in real arithmetic; in float32 within a
    few 1e-7 relative of the two layers."""
    import keras
    import numpy as np

    folded = _FOLDED.get(batch_norm)
    if folded is not None:
        return folded
    variance = np.asarray(batch_norm.moving_variance, np.float64)
    scale = 1.0 / np.sqrt(variance + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * np.asarray(batch_norm.gamma, np.float64)
    shift = -np.asarray(batch_norm.moving_mean, np.float64) * scale
    if batch_norm.center:
        shift = shift + np.asarray(batch_norm.beta, np.float64)
    # Conv2D's kernel is (h, w, in, out); DepthwiseConv2D's (h, w, in, multiplier),
    # its output channel in·multiplier + k; SeparableConv2D's output channels are its
    # pointwise kernel's (1, 1, in·multiplier, out), after the depthwise one.
    separable = type(conv) is keras.layers.SeparableConv2D
    kernel = np.asarray(conv.pointwise_kernel if separable else conv.kernel, np.float64)
    depthwise = type(conv) is keras.layers.DepthwiseConv2D
    kernel = kernel * scale.reshape(kernel.shape[2:] if depthwise else (1, -1))
    bias = np.asarray(conv.bias, np.float64) * scale if conv.use_bias else 0.0
    folded = type(conv).from_config({**conv.get_config(), "use_bias": True})
    folded.build(conv.input.shape)
    weights = [kernel.astype(np.float32), (bias + shift).astype(np.float32)]
    folded.set_weights([np.asarray(conv.depthwise_kernel), *weights] if separable else weights)
    _FOLDED[batch_norm] = folded
    return folded


def with_fast_ops(model, for_export=False):
    """``model`` with its grouped depthwise convolutions (and, ``for_export``, its
    exact GELUs and Normalization layers) swapped, and its batch normalizations folded
    into the convolutions before them; every other layer and every weight is shared.
    ``model`` itself when there is nothing to swap."""
    import keras
    import tensorflow as tf

    class DepthwiseFromGrouped(keras.layers.Layer):
        def __init__(self, conv, **kwargs):
            super().__init__(name=conv.name, dtype=conv.dtype_policy, **kwargs)
            self.conv = conv

        def call(self, x):
            conv = self.conv
            height, width, _, out = conv.kernel.shape
            channels = x.shape[-1]
            # (h, w, 1, c·m) → (h, w, c, m): the same memory order.
            kernel = tf.reshape(
                tf.convert_to_tensor(conv.kernel), (height, width, channels, out // channels)
            )
            y = tf.nn.depthwise_conv2d(
                x, tf.cast(kernel, x.dtype), strides=(1, *conv.strides, 1),
                padding=conv.padding.upper(), dilations=conv.dilation_rate,
                data_format="NHWC",
            )
            if conv.use_bias:
                y = tf.nn.bias_add(y, tf.cast(conv.bias, y.dtype))
            return conv.activation(y) if conv.activation is not None else y

    class FoldedBatchNorm(keras.layers.Layer):
        """Its scale and shift live in the convolution before it now."""

        def call(self, x, training=None, mask=None):
            return x

    class ErfGelu(keras.layers.Layer):
        def __init__(self, activation, **kwargs):
            super().__init__(name=activation.name, dtype=activation.dtype_policy, **kwargs)

        def call(self, x):
            return x * (0.5 + 0.5 * tf.math.erf(x * 0.7071067811865476))

    class ConstantNormalization(keras.layers.Layer):
        def __init__(self, normalization, **kwargs):
            super().__init__(name=normalization.name, **kwargs)
            import numpy as np

            self.invert = normalization.invert
            self.mean = np.asarray(normalization.mean, np.float32)
            self.std = np.maximum(
                np.sqrt(np.asarray(normalization.variance, np.float32)),
                keras.config.epsilon(),
            ).astype(np.float32)

        def call(self, x):
            mean, std = tf.constant(self.mean), tf.constant(self.std)
            return x * std + mean if self.invert else (x - mean) / std

    folds = {} if not FOLD_BATCH_NORMS else foldable_batch_norms(model)
    folded_convolutions = {conv: batch_norm for batch_norm, conv in folds.items()}

    def swap(layer):
        if layer in folded_convolutions:
            return folded_convolution(layer, folded_convolutions[layer])
        if layer in folds:
            return FoldedBatchNorm(name=layer.name)
        if _is_depthwise_grouped(layer):
            return DepthwiseFromGrouped(layer)
        if for_export and _is_exact_gelu(layer):
            return ErfGelu(layer)
        if for_export and type(layer) is keras.layers.Normalization:
            return ConstantNormalization(layer)
        return layer  # shared, weights and all

    if all(swap(layer) is layer for layer in _layers(model)):
        return model
    return keras.models.clone_model(model, clone_function=swap)
