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
"""


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


def with_fast_ops(model, for_export=False):
    """``model`` with its grouped depthwise convolutions (and, ``for_export``, its
    exact GELUs and Normalization layers) swapped; every other layer and every weight
    is shared. ``model`` itself when there is nothing to swap."""
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

    def swap(layer):
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
