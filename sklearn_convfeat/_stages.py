"""What the graph of a convolutional base says: cut points, stages, shapes, FLOPs.

Nothing here is tabulated per network: a base is any Functional Keras model taking
images, and everything is read from its graph.

- A **cut point** is an operation every path from the input to the output goes
  through: the base cut there is a model of its own, and what follows runs on its
  output alone (so a feature cache can resume from it).
- **Stage N** ends at the last *block* whose output is downsampled 2^N times (timm's
  ``reduction``). Blocks are the groups the layer names make (``block3``,
  ``conv4_block6``, ``block5c``, ``stage_2_block_0``); a layer outside any group is a
  block of its own; a block counts only when its last operation is a cut point. The
  network's output ends the stage it is in (the top convolution belongs to the last
  block). For VGG16 stage N ends at ``block{N}_pool``, for ResNet50 at
  ``conv{N}_block{last}_out``.
"""

import math
import re

N_STAGES = 5
_BLOCK = re.compile(r"^(.*?block_?\d+[a-z]?)(?:_|$)")


def top_operations(model):
    """The operations of ``model`` in network order, input layers left out."""
    import keras

    return [
        operation for operation in model.operations
        if not isinstance(operation, keras.layers.InputLayer)
    ]


def operation_output(model, name):
    """The output tensor of ``model``'s top-level operation called ``name``."""
    for operation in top_operations(model):
        if operation.name == name:
            return operation.output
    raise ValueError(f"{model.name!r} has no layer or operation {name!r}")


def _flat(tensors):
    import keras

    return keras.tree.flatten(tensors)


def spatial_shapes(model, operations, image_size):
    """{operation name: output shape without batch} for ``image_size`` inputs.

    Raises ``ValueError`` when the network cannot take that size (a map shrinks to
    nothing, or branches of different sizes meet).
    """
    import keras

    probe = keras.Model(model.inputs, [operation.output for operation in operations])
    channels = model.inputs[0].shape[-1]
    specs = probe.compute_output_spec(keras.KerasTensor((1, *image_size, channels)))
    shapes = {}
    for operation, spec in zip(operations, _flat(specs)):
        shape = tuple(spec.shape[1:])
        if any(side is not None and side < 1 for side in shape):
            raise ValueError(f"the output of {operation.name!r} is empty at {image_size}")
        shapes[operation.name] = shape
    return shapes


class BaseGraph:
    """The cut points and stages of a Functional model, read at ``probe_size``.

    ``probe_size`` should be a size the network is made for (its native size):
    downsampling is read as ``round(log2(input side / output side))``. A network
    that is not downsampled stage by stage (a vision transformer) gives its
    ``stage_ends`` ({stage: layer name}) instead.
    """

    def __init__(self, model, probe_size, stage_ends=None):
        self.model = model
        self.operations = top_operations(model)
        self.names = [operation.name for operation in self.operations]
        self.position = {name: index for index, name in enumerate(self.names)}
        producer = {
            id(tensor): operation.name
            for operation in self.operations for tensor in _flat(operation.output)
        }
        # The operations whose outputs are the model's (several for a multi-output one).
        self.output_names = [producer[id(t)] for t in model.outputs if id(t) in producer]
        self.cut_points = self._find_cut_points()
        shapes = spatial_shapes(model, self.operations, probe_size)
        self.reduction = {
            name: round(math.log2(probe_size[0] / shape[0]))
            for name, shape in shapes.items()
            if len(shape) == 3 and shape[0]
        }
        self.stage_ends = (
            dict(sorted(stage_ends.items())) if stage_ends else self._find_stage_ends()
        )

    def _find_cut_points(self):
        producer = {}
        for index, operation in enumerate(self.operations):
            for tensor in _flat(operation.output):
                producer[id(tensor)] = index
        # earliest[j]: the earliest producer of an input of operation j (-1: the input)
        earliest = []
        for operation in self.operations:
            try:
                inputs = _flat(operation.input)
            except (AttributeError, ValueError) as exc:  # a layer called twice
                raise ValueError(
                    f"The backbone's layer {operation.name!r} is called more than once "
                    "(a shared layer), so the network cannot be cut into stages. "
                    "Pass `layer` as the name of a layer instead."
                ) from exc
            earliest.append(min((producer.get(id(t), -1) for t in inputs), default=-1))
        cut_points = set()
        later_earliest = len(self.operations)
        for index in range(len(self.operations) - 1, -1, -1):
            if later_earliest >= index:
                cut_points.add(self.names[index])
            later_earliest = min(later_earliest, earliest[index])
        return cut_points

    def _find_stage_ends(self):
        import keras

        block_end = {}
        for operation, name in zip(self.operations, self.names):
            if isinstance(operation, keras.layers.ZeroPadding2D):
                continue  # padding only prepares the next block's strided layer
            match = _BLOCK.match(name)
            block_end[match.group(1) if match else name] = name
        # The last block end of each stage, a cut point if the stage has one (NASNet's
        # cells read two earlier cells, so its stages have none: cut, but not resumed).
        ends, cut = {}, {}
        for name in sorted(block_end.values(), key=self.position.get):
            stage = self.reduction.get(name)
            if stage is not None and 1 <= stage <= N_STAGES:
                ends[stage] = name
                if name in self.cut_points:
                    cut[stage] = name
        ends.update(cut)
        final = self.names[-1]
        stage = self.reduction.get(final)
        if stage is not None and stage >= 1:
            ends = {s: name for s, name in ends.items() if s < min(stage, N_STAGES)}
            ends[min(stage, N_STAGES)] = final
        return dict(sorted(ends.items()))

    def output(self, name):
        """The tensor ``name`` outputs."""
        return self.operations[self.position[name]].output

    def precedes(self, first, second):
        return self.position[first] < self.position[second]

    def resume_points(self, name):
        """Stage ends before ``name`` that are cut points, deepest first."""
        return [
            end for end in reversed(self.stage_ends.values())
            if self.precedes(end, name) and end in self.cut_points
        ]


def layer_flops(layer, input_shape, output_shape):
    """2 × multiply-adds of one layer (convolutions, dense and einsum-dense layers),
    0 otherwise; a layer built of other layers (a transformer block) counts theirs and
    its attention products (see :func:`_composite_flops`)."""
    import keras

    input_shape = tuple(input_shape)
    output_shape = tuple(output_shape)
    if isinstance(layer, keras.Model):
        return model_flops(layer, input_shape)
    positions = math.prod(output_shape[:-1])
    channels_in = input_shape[-1]
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise = positions * channels_in * layer.depth_multiplier * math.prod(
            layer.kernel_size
        )
        pointwise = positions * channels_in * layer.depth_multiplier * output_shape[-1]
        return 2 * (depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2 * positions * channels_in * layer.depth_multiplier * math.prod(
            layer.kernel_size
        )
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return 2 * math.prod(input_shape[:-1]) * channels_in * output_shape[-1] * math.prod(
            layer.kernel_size
        )
    if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D):
        groups = getattr(layer, "groups", 1)
        return 2 * positions * output_shape[-1] * math.prod(layer.kernel_size) * (
            channels_in // groups
        )
    if isinstance(layer, keras.layers.Dense):
        return 2 * positions * channels_in * output_shape[-1]
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_dense_flops(layer, input_shape)
    return _composite_flops(layer, input_shape)


def _einsum_dense_flops(layer, input_shape):
    """An einsum of the input and the kernel: 2 × the product of every index's size."""
    operands = layer.equation.split("->")[0]
    input_letters, kernel_letters = (part.strip() for part in operands.split(","))
    shape = (1, *input_shape)  # the batch index, of size 1
    if "..." in input_letters:  # the ellipsis stands for the leading axes
        named = input_letters.replace("...", "")
        input_letters = "".join(chr(0x3B1 + i) for i in range(len(shape) - len(named)))
        input_letters += named
    sizes = dict(zip(input_letters, shape))
    sizes.update(zip(kernel_letters, layer.kernel.shape))
    return 2 * math.prod(int(size) for size in sizes.values())


def _composite_flops(layer, input_shape):
    """FLOPs of a layer that calls other layers (keras-hub's transformer blocks,
    embeddings and attention-pooling heads), read by tracing one symbolic call: its
    convolution, dense and einsum-dense sublayers at the shapes they are called with,
    and each ``MultiHeadAttention``'s two products, query · keys and scores · values
    (2 × heads × queries × keys × (key_dim + value_dim)), which are no sublayer's.
    Elementwise work (softmax, norms, activations, additions) is left out, as for
    convnets. 0 for a layer without such sublayers or one that cannot be traced on
    one input."""
    import keras

    if not isinstance(layer, keras.layers.Layer):  # an operation such as ops.add
        return 0
    sublayers = [
        sublayer for sublayer in layer._flatten_layers(include_self=False, recursive=True)
        if isinstance(sublayer, (keras.layers.MultiHeadAttention, *_counted_layers()))
    ]
    if not sublayers:
        return 0
    calls = []

    def recording(sublayer, call):
        def record(*args, **kwargs):
            outputs = call(*args, **kwargs)
            calls.append((sublayer, args, kwargs, outputs))
            return outputs

        return record

    for sublayer in sublayers:
        sublayer.call = recording(sublayer, sublayer.call)
    try:
        from keras.src.backend import compute_output_spec

        compute_output_spec(layer, keras.KerasTensor((1, *input_shape)))
    except Exception:  # noqa: BLE001  a layer needing more than one input: uncounted
        return 0
    finally:
        for sublayer in sublayers:
            del sublayer.call
    total = 0
    for sublayer, args, kwargs, outputs in calls:
        if isinstance(sublayer, keras.layers.MultiHeadAttention):
            query = args[0] if args else kwargs["query"]
            value = args[1] if len(args) > 1 else kwargs.get("value", query)
            total += 2 * sublayer.num_heads * math.prod(query.shape[1:-1]) * math.prod(
                value.shape[1:-1]) * (sublayer.key_dim + (sublayer.value_dim or sublayer.key_dim))
        else:
            total += layer_flops(sublayer, tuple(_flat(args)[0].shape[1:]),
                                 tuple(_flat(outputs)[0].shape[1:]))
    return total


def _counted_layers():
    import keras

    return (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv2D, keras.layers.Dense, keras.layers.EinsumDense)


def model_flops(model, input_shape):
    """FLOPs of ``model`` on one input of ``input_shape`` (without the batch axis)."""
    import keras

    if not hasattr(model, "operations") or isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs)
    operations = top_operations(model)
    probe = keras.Model(model.inputs, [operation.output for operation in operations])
    specs = _flat(probe.compute_output_spec(keras.KerasTensor((1, *input_shape))))
    shape_of = {id(model.inputs[0]): (1, *input_shape)}
    for operation, spec in zip(operations, specs):
        shape_of[id(operation.output)] = tuple(spec.shape)
    total = 0
    for operation in operations:
        inputs = _flat(operation.input)
        if not inputs or id(inputs[0]) not in shape_of:
            continue
        total += layer_flops(
            operation, shape_of[id(inputs[0])][1:], shape_of[id(operation.output)][1:]
        )
    return total
