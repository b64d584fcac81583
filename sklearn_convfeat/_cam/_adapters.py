"""Model adapters: one interface over every kind of model ``cam`` explains.

An adapter runs its model forward to a class score while reading the feature map of
one layer: ``gradients`` (maps, d score / d maps, logits), ``forward`` (maps and logits,
the maps optionally scaled channel by channel) and ``logits``. Each model kind is a
subclass; :func:`make_adapter` picks it.
"""

import weakref

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._architectures import blank_pixel
from .._backbone import blank_input
from .._backbones import token_layers
from .._decode import resize, to_rgb
from .._images import ImageArray
from ._compiled import compile_forward, compile_gradients, compile_logits, compiled
from ._keras_graph import (
    find_layer,
    is_conv,
    is_graph_model,
    logits,
    make_trace,
    output_activation,
    output_shape,
    walk,
)

SUPPORTED_MODELS = (
    "a fitted FineTuner; a fitted Pipeline([ConvFeatureExtractor, (StandardScaler, "
    "MinMaxScaler or MaxAbsScaler steps), KerasMLPClassifier or a linear classifier "
    "with coef_ and intercept_ such as LogisticRegression]); or a built Keras "
    "Sequential or Functional model (nested models included) with one image input "
    "and one output"
)


def make_adapter(model, layer, need_layer=True):
    """The adapter of ``model``, reading the maps of ``layer`` (None: the last conv)."""
    from sklearn.pipeline import Pipeline

    from .._finetune import FineTuner
    from ._pipeline import make_pipeline_adapter

    if isinstance(model, FineTuner):
        return FineTunerAdapter(model, layer, need_layer=need_layer)
    if isinstance(model, Pipeline):
        return make_pipeline_adapter(model, layer, need_layer=need_layer)
    import keras

    if isinstance(model, keras.Model) and is_graph_model(model):
        return KerasAdapter(model, layer, need_layer=need_layer)
    if isinstance(model, keras.Model):
        raise TypeError(
            f"`model` is a subclassed Keras model ({type(model).__name__}) whose call() "
            "cannot be run layer by layer. Build it with the Sequential or Functional "
            f"API. Supported models: {SUPPORTED_MODELS}."
        )
    raise TypeError(f"`model` must be {SUPPORTED_MODELS}. Got a {type(model).__name__}.")


def to_proba(logits, activation):
    """Probabilities of each class from the logits, as the model's own output layer."""
    from scipy.special import expit, softmax

    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        positive = expit(logits[:, 0])
        return np.column_stack([1.0 - positive, positive])
    if activation == "sigmoid":  # independent sigmoids (multi-label): as the model says
        return expit(logits)
    return softmax(logits, axis=1)


class ModelAdapter:
    """What every adapter offers. Subclasses set ``classes``, ``binary``,
    ``activation``, ``size`` (fixed input size or None), ``plain`` (a user's Keras
    model, whose input is taken as preprocessed) and ``layer``, and say how their
    model runs (``_run``) and which compiled functions are theirs (``_owner_key``)."""

    plain = False

    # -- what subclasses define
    def _run(self, layer):
        """``run(images, params, tape, channel_scale)`` → (maps, logits)."""
        raise NotImplementedError

    def _owner_key(self, what, layer):
        """(Keras model that owns the compiled function, its cache key)."""
        raise NotImplementedError

    def _specs(self):
        import tensorflow as tf

        return tf.TensorSpec((None, None, None, 3), tf.float32), []

    def _params(self):
        return ()

    def inputs(self, images, rows, size):
        """The model's float32 input for ``rows`` of ``images``, at ``size``."""
        return images.take(rows, size)

    def blank(self, x):
        """The input that carries no information: what masked pixels become."""
        return np.zeros_like(x)

    # -- shared
    def _function(self, what, layer, compile_):
        owner, key = self._owner_key(what, layer)
        return compiled(owner, key, lambda: compile_(self._run(layer), *self._specs()))

    def gradients(self, x, targets):
        """(maps, d score / d maps, logits, targets with -1 replaced), numpy."""
        function = self._function(
            "gradients", self.layer,
            lambda run, image, params: compile_gradients(run, image, params, self.binary),
        )
        maps, grads, logits_, targets = function(
            x, np.asarray(targets, dtype=np.int32), *self._params()
        )
        return maps.numpy(), grads.numpy(), logits_.numpy(), targets.numpy()

    def forward(self, x, channel_scale=None):
        """(maps, logits) with the layer's maps multiplied by ``channel_scale``."""
        if channel_scale is None:
            channel_scale = np.ones((len(x), 1), dtype=np.float32)
        function = self._function("forward", self.layer, compile_forward)
        maps, logits_ = function(x, np.asarray(channel_scale, np.float32), *self._params())
        return maps.numpy(), logits_.numpy()

    def logits(self, x):
        function = self._function("logits", None, compile_logits)
        return function(x, *self._params()).numpy()

    def to_proba(self, logits_):
        return to_proba(logits_, self.activation)

    def proba(self, x, batch_size=32):
        """Class probabilities of a batch of model inputs, ``batch_size`` at a time."""
        return np.concatenate([
            self.to_proba(self.logits(x[start : start + batch_size]))
            for start in range(0, len(x), batch_size)
        ])

    def fill_targets(self, targets, logits_):
        """Replace the -1 (predicted class) entries of ``targets``."""
        logits_ = np.asarray(logits_)
        predicted = (logits_[:, 0] > 0).astype(int) if self.binary else logits_.argmax(axis=1)
        return np.where(np.asarray(targets) < 0, predicted, targets).astype(int)


class KerasAdapter(ModelAdapter):
    """A user's Sequential or Functional Keras model, nested models included."""

    plain = True
    token_prefix = None  # a transformer's tokens before its patch tokens (FineTuner)

    def __init__(self, model, layer, *, need_layer=True, classes=None, size=None):
        import tensorflow as tf

        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError) as exc:
            raise ValueError(
                "`model` is a Keras model that has not been built, so its layers have "
                "no shapes. Build it first: start it with keras.Input(shape), or call "
                "model.build((None, height, width, channels))."
            ) from exc
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"`model` must have one input and one output; it has {len(inputs)} "
                f"inputs and {len(outputs)} outputs. Build a model with the output "
                "to explain."
            )
        input_shape = tuple(inputs[0].shape)
        if len(input_shape) != 4:
            raise ValueError(
                "`model` must take a batch of images (batch, height, width, channels); "
                f"its input has shape {input_shape}."
            )
        self.model = model
        self.size = tuple(size) if size is not None else (
            None if None in input_shape[1:3] else tuple(input_shape[1:3])
        )
        self.channels = input_shape[3]
        self._image_spec = tf.TensorSpec((None, *input_shape[1:]), tf.float32)
        self.layer = None
        if layer is not None or need_layer:
            self.layer = self._resolve_layer(layer)
        self.activation = output_activation(model)
        n_outputs = outputs[0].shape[-1]
        self.binary = n_outputs == 1
        self.classes = np.asarray(
            classes if classes is not None else np.arange(2 if self.binary else n_outputs)
        )

    def _resolve_layer(self, layer):
        convs = [candidate for candidate in walk(self.model) if is_conv(candidate)]
        if layer is None:
            if not convs:
                raise ValueError(
                    "`layer` is None, which takes the model's last convolutional "
                    "layer, but the model has none. Pass layer= the name of a layer "
                    "with a 4-D (batch, height, width, channels) output."
                )
            return convs[-1].name
        suggestion = (
            f" Its convolutional layers are {[conv.name for conv in convs]}." if convs else ""
        )
        found = find_layer(self.model, layer) if isinstance(layer, str) else None
        if found is None:
            raise ValueError(
                f"`layer` must be the name of a layer of the model. Got {layer!r}."
                f"{suggestion}"
            )
        shape = output_shape(found[0])
        if shape is not None and len(shape) != 4:
            raise ValueError(
                f"`layer` must have a 4-D (batch, height, width, channels) output, a "
                f"feature map. Got layer={layer!r}, whose output has shape {shape}."
                f"{suggestion}"
            )
        return layer

    def inputs(self, images, rows, size):
        if isinstance(images, ImageArray):
            x = np.asarray(images.array[rows], dtype=np.float32)
            if x.ndim == 3:
                x = x[..., np.newaxis]
            if x.shape[-1] != self.channels and self.channels == 3:
                x = to_rgb(x)
        else:
            x = images.take(rows, size)
        if self.channels is not None and x.shape[-1] != self.channels:
            raise ValueError(
                f"`model` takes images with {self.channels} channels; X has "
                f"{x.shape[-1]}. Convert X to what the model takes."
            )
        return resize(x, size)

    def _specs(self):
        return self._image_spec, []

    def _owner_key(self, what, layer):
        return self.model, (what, layer)

    def _run(self, layer):
        model_ref = weakref.ref(self.model)
        token_prefix = self.token_prefix

        def run(images, params, tape, channel_scale):
            model = model_ref()
            trace = make_trace(model, layer, tape, channel_scale, token_prefix)
            scores = logits(model, images, trace)
            if layer is not None and trace.maps is None:
                raise ValueError(
                    f"`layer` {layer!r} is not on the path from the model's input to "
                    "its output. Pick a layer the model's output depends on."
                )
            if layer is not None and len(trace.maps.shape) != 4:
                raise ValueError(
                    f"`layer` must have a 4-D (batch, height, width, channels) output; "
                    f"{layer!r} outputs shape {tuple(trace.maps.shape)}."
                )
            return trace.maps, scores

        return run


class FineTunerAdapter(KerasAdapter):
    """A fitted FineTuner: its Keras model, its classes, images in [0, 255]."""

    plain = False

    def __init__(self, tuner, layer, *, need_layer=True):
        from .._finetune_base import transformer_layout
        from .._finetune_phases import base_of

        check_is_fitted(tuner)
        self.transformer = transformer_layout(tuner)
        if self.transformer is not None:
            self.token_prefix = self.transformer["prefix_tokens"]
        if layer is not None and not isinstance(layer, str):
            layer = _stage_end(base_of(tuner.model_), tuner.image_size_, layer, self.transformer)
        super().__init__(
            tuner.model_, layer, need_layer=need_layer, classes=tuner.classes_,
            size=tuner.image_size_,
        )
        self.preprocessing = tuner.preprocessing_

    def _resolve_layer(self, layer):
        if self.transformer is None:
            return super()._resolve_layer(layer)
        # A transformer: the patch tokens of a block, by default the input of the
        # last one (its class token reads the patch tokens there).
        from .._finetune_phases import base_of

        layers, default = token_layers(op.name for op in base_of(self.model).operations)
        if layer is None:
            return default
        if layer not in layers:
            raise ValueError(
                "`layer` must output the tokens of the FineTuner's transformer: one of "
                f"{', '.join(map(repr, layers))}, or a stage number. Got "
                f"{layer!r}; the default is {default!r}, the input of the last block."
            )
        return layer

    def inputs(self, images, rows, size):
        return images.take(rows, size)

    def blank(self, x):
        from .._finetune_phases import base_of

        if self.transformer is None:
            pixel = blank_pixel(self.preprocessing)
        else:  # the preset's ImageConverter begins the base
            pixel = blank_input(base_of(self.model), self.preprocessing)
        return np.broadcast_to(pixel, x.shape).astype(np.float32)


def _stage_end(base, image_size, stage, transformer=None):
    """The layer ending stage ``stage`` of a FineTuner's (copied) base."""
    from .._stages import BaseGraph

    if transformer is not None:
        ends = transformer["stage_ends"]
    else:
        ends = BaseGraph(base, tuple(image_size)).stage_ends
    if stage not in ends:
        raise ValueError(
            f"`layer` must be a layer name or one of the stages {sorted(ends)} of the "
            f"FineTuner's base ({', '.join(f'{n}={e!r}' for n, e in ends.items())}). "
            f"Got layer={stage!r}."
        )
    return ends[stage]
