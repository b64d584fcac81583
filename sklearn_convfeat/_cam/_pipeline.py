"""Adapters of ``Pipeline([ConvFeatureExtractor, (affine scalers), classifier])``.

The extractor's base runs from the input up to its cut, the feature map is pooled
as the extractor pools it, the scalers are applied as the affine maps they are, then
the classifier: a :class:`KerasMLPClassifier`'s network, or ``features @ coef_.T +
intercept_`` for a linear model. The extractor is reached through its runners only
(``feature_runner``, ``tensorflow_runner``).
"""

import weakref

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._architectures import preprocess
from .._backbone import blank_input, pool, pool_array
from .._backbones import token_layers
from .._stages import operation_output
from ._adapters import SUPPORTED_MODELS, ModelAdapter
from ._compiled import compiled
from ._keras_graph import is_conv, logits, make_trace, output_activation, run_model

AFFINE_STEPS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "'passthrough'")


def make_pipeline_adapter(pipeline, layer, need_layer=True):
    from .._mlp import KerasMLPClassifier

    steps = [step for _, step in pipeline.steps]
    head = steps[-1]
    if isinstance(head, KerasMLPClassifier):
        return MLPPipelineAdapter(pipeline, layer, need_layer=need_layer)
    if all(hasattr(head, name) for name in ("coef_", "intercept_", "classes_")):
        return LinearPipelineAdapter(pipeline, layer, need_layer=need_layer)
    _check_extractor(steps)
    raise TypeError(
        f"`model` is a Pipeline ending in a {type(head).__name__}, which is "
        "neither a KerasMLPClassifier nor a linear classifier with coef_, "
        f"intercept_ and classes_. Supported models: {SUPPORTED_MODELS}."
    )


def _check_extractor(steps):
    from .._extractor import ConvFeatureExtractor

    if not isinstance(steps[0], ConvFeatureExtractor) or len(steps) < 2:
        raise TypeError(
            f"`model` is a Pipeline whose first step is a {type(steps[0]).__name__}, "
            "not a ConvFeatureExtractor followed by a classifier. Supported models: "
            f"{SUPPORTED_MODELS}."
        )
    for step in steps:
        if step is not None and not (isinstance(step, str) and step == "passthrough"):
            check_is_fitted(step)


def affine(steps, n_features):
    """(scale, shift) with steps(f) == f * scale + shift for the scalers in ``steps``."""
    scale = np.ones(n_features)
    shift = np.zeros(n_features)
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    for step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, StandardScaler):
            a = 1.0 / step.scale_ if step.with_std else np.ones(n_features)
            b = -step.mean_ * a if step.with_mean else np.zeros(n_features)
        elif isinstance(step, MinMaxScaler) and not step.clip:
            a, b = step.scale_, step.min_
        elif isinstance(step, MaxAbsScaler):
            a, b = 1.0 / step.scale_, np.zeros(n_features)
        else:
            raise TypeError(
                f"`model` is a Pipeline with a {type(step).__name__} step between the "
                "extractor and the classifier; only affine steps can be explained "
                f"through: {', '.join(AFFINE_STEPS)} (MinMaxScaler without clip). "
                "Remove the step or fold it into the classifier."
            )
        scale, shift = scale * a, shift * a + b
    return scale, shift


class PipelineAdapter(ModelAdapter):
    """What both pipeline heads share: the base up to the cut, pooling, scalers."""

    def __init__(self, pipeline, layer, need_layer=True):
        from .._extractor import feature_runner, fitted_pooling, tensorflow_runner

        steps = [step for _, step in pipeline.steps]
        _check_extractor(steps)
        extractor = steps[0]
        self.size = tuple(extractor.image_size_)
        self.cut = extractor.layer_
        self.pooling = fitted_pooling(extractor)
        self.preprocessing = extractor.preprocessing_
        # The only two ways into the extractor: its own backend for the features
        # transform() gives, and TensorFlow's graph of the base for gradients.
        self.runner = feature_runner(extractor)
        self.graph_runner = tensorflow_runner(extractor)
        self.graph = self.graph_runner.entry.graph
        self.token_prefix = self.graph_runner.entry.prefix_tokens
        self.network = self.graph_runner.entry.network
        self.scale, self.shift = affine(steps[1:-1], extractor.n_features_out_)
        self.classes = np.asarray(steps[-1].classes_)
        self._init_head(steps[-1])
        self.layer = None
        if layer is not None or need_layer:
            self.layer = self._resolve_layer(layer)

    def _resolve_layer(self, layer):
        graph = self.graph
        before_cut = graph.operations[: graph.position[self.cut] + 1]
        if self.token_prefix is not None:
            return self._resolve_token_layer(layer, [op.name for op in before_cut])
        convs = [operation.name for operation in before_cut if is_conv(operation)]
        last_conv = convs[-1] if convs else self.cut
        if layer is None:
            return last_conv
        try:
            name = self.graph_runner.entry.resolve_layer(layer)
        except ValueError:
            raise ValueError(
                f"`layer` must be a layer name of the extractor's base ({self.network}) "
                f"or a stage number 1-5. Got {layer!r}; the last convolutional layer "
                f"of this pipeline is {last_conv!r}."
            ) from None
        if graph.precedes(self.cut, name):
            raise ValueError(
                f"`layer` must be at or before the extractor's cut, layer_="
                f"{self.cut!r}: the features know nothing of later layers. Got "
                f"layer={name!r}; use e.g. {last_conv!r}, the last convolutional layer "
                "before the cut."
            )
        return name

    def _resolve_token_layer(self, layer, before_cut):
        """A transformer's layer: by default the input of the last block up to the
        cut (its class token reads the patch tokens there; pytorch-grad-cam's choice)."""
        layers, default = token_layers(before_cut)
        if layer is None:
            return default
        try:
            name = self.graph_runner.entry.resolve_layer(layer)
        except ValueError:
            name = None
        if name not in layers:
            raise ValueError(
                f"`layer` must output the tokens of the extractor's transformer "
                f"({self.network}) at or before its cut, layer_={self.cut!r}: one of "
                f"{', '.join(map(repr, layers))}, or a stage number. Got "
                f"{layer!r}; the default is {default!r}, the input of the last block."
            )
        return name

    def blank(self, x):
        pixel = blank_input(self.graph_runner.model, self.preprocessing)
        return np.broadcast_to(pixel, x.shape).astype(np.float32)

    def _run(self, layer):
        base_ref = weakref.ref(self.graph_runner.model)
        cut_name = self.cut
        preprocessing, pooling, head = self.preprocessing, self.pooling, self._head_fn()
        token_prefix = self.token_prefix

        def run(images, params, tape, channel_scale):
            import keras

            base = base_ref()  # built at trace time: the compiled function keeps no model
            cut = keras.Model(base.inputs, operation_output(base, cut_name))
            trace = make_trace(cut, layer, tape, channel_scale, token_prefix)
            maps = run_model(cut, preprocess(images, preprocessing), trace)
            return trace.maps, head(pool(maps, pooling), params)

        return run

    def _key(self, what, layer):
        return (what, layer, self.cut, self.preprocessing, self.pooling, self.binary)

    def logits(self, x):
        # The extractor's own features (its backend), then the head in numpy or TF.
        return self._head_logits(self.runner.features(x, self.pooling))


class LinearPipelineAdapter(PipelineAdapter):
    """A linear classifier: when the layer is the cut, the gradient of the score is
    exact without a backward pass (the coefficients laid out over the feature map)."""

    def _init_head(self, head):
        coef = np.atleast_2d(np.asarray(head.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(head.intercept_, dtype=np.float64))
        # The scalers fold into the linear model: w·(f·a + c) + b.
        self.coef = coef * self.scale
        self.intercept = intercept + coef @ self.shift
        self.binary = coef.shape[0] == 1
        self.activation = None

    @property
    def analytic(self):
        return self.layer == self.cut and self.token_prefix is None

    def _head_fn(self):
        import tensorflow as tf

        def head(features, params):
            coef, intercept = params
            return tf.matmul(features, coef, transpose_b=True) + intercept

        return head

    def _head_logits(self, features):
        return np.asarray(features, dtype=np.float64) @ self.coef.T + self.intercept

    def _params(self):
        return (self.coef.astype(np.float32), self.intercept.astype(np.float32))

    def _specs(self):
        import tensorflow as tf

        image = tf.TensorSpec((None, None, None, 3), tf.float32)
        return image, [tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((None,), tf.float32)]

    def _owner_key(self, what, layer):
        return self.graph_runner.model, ("linear", *self._key(what, layer))

    def gradients(self, x, targets):
        if not self.analytic:
            return super().gradients(x, targets)
        maps = self.runner.maps(x)
        logits_ = self._head_logits(pool_array(maps, self.pooling))
        targets = self.fill_targets(targets, logits_)
        return maps, self._exact_gradients(maps, targets), logits_, targets

    def forward(self, x, channel_scale=None):
        if not self.analytic:
            return super().forward(x, channel_scale)
        maps = self.runner.maps(x)
        if channel_scale is not None:
            maps = maps * np.asarray(channel_scale, np.float32)[:, None, None, :]
        return maps, self._head_logits(pool_array(maps, self.pooling))

    def _exact_gradients(self, maps, targets):
        """d score / d maps: the coefficients laid out over the feature map."""
        n_images, height, width, channels = maps.shape
        if self.binary:  # the score of class 0 is -decision_function
            rows = self.coef[np.zeros(n_images, dtype=int)]
            rows = rows * np.where(targets == 1, 1.0, -1.0)[:, np.newaxis]
        else:
            rows = self.coef[targets]
        if self.pooling == "flatten":
            return rows.reshape(n_images, height, width, channels)
        if self.pooling == "avg":
            return np.broadcast_to(
                rows[:, np.newaxis, np.newaxis, :] / (height * width), maps.shape
            ).copy()
        # max: each channel's value comes from its maximum; ties share it, as in TF.
        at_max = maps == maps.max(axis=(1, 2), keepdims=True)
        share = at_max / at_max.sum(axis=(1, 2), keepdims=True)
        return share * rows[:, np.newaxis, np.newaxis, :]


class MLPPipelineAdapter(PipelineAdapter):
    """A KerasMLPClassifier head: its network runs after the scalers."""

    def _init_head(self, head):
        self.head_model = head.model_
        self.binary = self.head_model.outputs[0].shape[-1] == 1
        self.activation = output_activation(self.head_model)

    def _head_fn(self):
        head_ref = weakref.ref(self.head_model)

        def head(features, params):
            scale, shift = params
            return logits(head_ref(), features * scale + shift)

        return head

    def _head_logits(self, features):
        import tensorflow as tf

        head_ref = weakref.ref(self.head_model)
        function = compiled(self.head_model, ("head",), lambda: tf.function(
            lambda f: logits(head_ref(), f),
            input_signature=[tf.TensorSpec((None, None), tf.float32)],
            reduce_retracing=True,
        ))
        scaled = np.asarray(features, np.float64) * self.scale + self.shift
        return function(scaled.astype(np.float32)).numpy()

    def _params(self):
        return (self.scale.astype(np.float32), self.shift.astype(np.float32))

    def _specs(self):
        import tensorflow as tf

        image = tf.TensorSpec((None, None, None, 3), tf.float32)
        return image, [tf.TensorSpec((None,), tf.float32)] * 2

    def _owner_key(self, what, layer):
        return self.head_model, (
            "mlp", weakref.ref(self.graph_runner.model), *self._key(what, layer)
        )
