"""Running a Keras model layer by layer, to read one layer's maps and the logits.

A Sequential runs its layers in order; a Functional model runs its own graph of layers
(``Function._run_through_graph``) with a hook on each layer. A nested model that holds
the chosen layer or the output layer is entered the same way instead of being called
whole; every other layer is called as is, with ``training=False``. No sub-model is built
from a nested model's tensors, which is what raises "Graph disconnected" in other
Grad-CAM code.
"""


class Trace:
    """What one explicit forward pass records (the maps, the logits), and may change:
    ``channel_scale`` (batch, channels) multiplies the maps (Ablation-CAM)."""

    def __init__(self, target_layer, final_layer, final_kind, containers, tape,
                 channel_scale=None, token_prefix=None):
        self.target_layer = target_layer
        # A transformer's target layer outputs tokens: the maps are its patch tokens
        # laid out on the patch grid, the tokens before them (class, registers) aside.
        self.token_prefix = token_prefix
        self.final_layer = final_layer
        self.final_kind = final_kind
        self.containers = containers
        self.tape = tape
        self.channel_scale = channel_scale
        self.maps = None
        self.logits = None


def make_trace(model, layer_name, tape=None, channel_scale=None, token_prefix=None):
    target, target_path = None, []
    if layer_name is not None:
        target, target_path = find_layer(model, layer_name)
    final_path, final, kind = final_layer(model)
    return Trace(
        target, final, kind, target_path + final_path, tape, channel_scale, token_prefix
    )


def run_model(model, x, trace):
    """``model(x)``, layer by layer, recording what ``trace`` asks for."""
    import keras

    if isinstance(model, keras.Sequential):
        for layer in sublayers(model):
            x = _run_layer(layer, trace, x)
        return x
    outputs = model._run_through_graph(
        [x], operation_fn=lambda layer: lambda *args, **kwargs: _run_layer(
            layer, trace, *args, **kwargs
        )
    )
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    return outputs


def logits(model, x, trace=None):
    """The class scores of ``model(x)``: the logits where the output layer's sigmoid or
    softmax can be undone, else the output."""
    trace = trace or make_trace(model, None)
    outputs = run_model(model, x, trace)
    return trace.logits if trace.logits is not None else outputs


def _run_layer(layer, trace, *args, **kwargs):
    import keras

    if layer is trace.final_layer and trace.final_kind == "dense":
        logit = keras.ops.matmul(args[0], layer.kernel)
        if layer.use_bias:
            logit = logit + layer.bias
        trace.logits = logit
        outputs = layer.activation(logit)
    elif layer is trace.final_layer:  # an Activation or Softmax layer
        trace.logits = args[0]
        outputs = layer(*args, **kwargs)
    elif any(layer is container for container in trace.containers):
        outputs = run_model(layer, args[0], trace)
    elif isinstance(layer, keras.layers.Layer):
        outputs = layer(*args, **{**kwargs, "training": False})
    else:  # an operation such as the + of a residual block
        outputs = layer(*args, **kwargs)
    if layer is trace.target_layer:
        prefix = trace.token_prefix
        maps = outputs if prefix is None else tokens_to_grid(outputs, prefix)
        if trace.channel_scale is not None:
            maps = maps * trace.channel_scale[:, None, None, :]
        if trace.tape is not None:
            trace.tape.watch(maps)
        trace.maps = maps
        # The rest of the network runs on what the maps hold, so gradients reach them.
        outputs = maps if prefix is None else grid_to_tokens(maps, outputs[:, :prefix])
    return outputs


def tokens_to_grid(tokens, prefix):
    """(n, prefix + side², width) tokens → (n, side, side, width) patch grid."""
    import tensorflow as tf

    patches = tokens[:, prefix:]
    shape = tf.shape(patches)
    side = tf.cast(tf.round(tf.sqrt(tf.cast(shape[1], tf.float32))), tf.int32)
    return tf.reshape(patches, (shape[0], side, side, shape[2]))


def grid_to_tokens(grid, prefix_tokens):
    """The inverse of :func:`tokens_to_grid`, given the tokens before the patches."""
    import tensorflow as tf

    shape = tf.shape(grid)
    patches = tf.reshape(grid, (shape[0], shape[1] * shape[2], shape[3]))
    return tf.concat([prefix_tokens, patches], axis=1)


def sublayers(model):
    """The layers and operations of ``model`` in order, input layers left out."""
    import keras

    operations = model.layers if isinstance(model, keras.Sequential) else model.operations
    return [layer for layer in operations if not isinstance(layer, keras.layers.InputLayer)]


def is_graph_model(model):
    """A Sequential or Functional model: one whose layers can be run one by one."""
    import keras

    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )


def walk(model):
    """Every layer of ``model``, nested models' layers included, in forward order."""
    for layer in sublayers(model):
        yield layer
        if is_graph_model(layer):
            yield from walk(layer)


def find_layer(model, name):
    """(layer, nested models that lead to it) for the layer called ``name``, or None."""
    layers = sublayers(model)
    for layer in layers:
        if layer.name == name:
            return layer, []
    for layer in layers:
        if is_graph_model(layer):
            found = find_layer(layer, name)
            if found is not None:
                return found[0], [layer, *found[1]]
    return None


def final_layer(model):
    """(nested models that lead to it, the output layer, "dense"/"activation"/None).

    The kind says how the logits are read: the pre-activation of a Dense layer with a
    sigmoid or softmax activation, or the input of a final sigmoid/softmax layer.
    """
    import keras

    if isinstance(model, keras.Sequential):
        layer = sublayers(model)[-1]
    else:
        history = getattr(model.outputs[0], "_keras_history", None)
        layer = history[0] if history is not None else sublayers(model)[-1]
    if is_graph_model(layer):
        path, final, kind = final_layer(layer)
        return [layer, *path], final, kind
    return [], layer, activation_kind(layer)[0]


def activation_kind(layer):
    """("dense" | "activation" | None, "sigmoid" | "softmax" | None)."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "activation", "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if name not in ("sigmoid", "softmax"):
        return None, None
    if isinstance(layer, keras.layers.Dense) and getattr(layer, "quantization_mode", None) is None:
        return "dense", name
    if isinstance(layer, keras.layers.Activation):
        return "activation", name
    return None, None


def output_activation(model):
    """"sigmoid", "softmax" or None: how the model turns its logits into its output."""
    return activation_kind(final_layer(model)[1])[1]


def is_conv(layer):
    import keras

    kinds = (
        keras.layers.Conv2D,
        keras.layers.SeparableConv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.Conv2DTranspose,
    )
    return isinstance(layer, kinds)


def output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # shared layer, or never called
        return None
