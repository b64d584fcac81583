"""Backbones of one's own: a built ``keras.Model``, identified by its content.

The record carries the model's ``.keras`` bytes, so any process rebuilds the same
base; models nested in it are laid out flat (``sklearn_convfeat._nested``).
"""

from ._source import BackboneSource, Network


def own_model_identity(model):
    """(sha256 over configuration and weights, ``.keras`` bytes) of a user's backbone."""
    import hashlib
    import json

    from .._architectures import hash_weights
    from .._keras_state import model_to_bytes

    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        raise ValueError(
            "`backbone` must be a built keras.Model with one image input of shape "
            "(batch, height, width, 3): start it with keras.Input((height, width, 3)) "
            f"or (None, None, 3). Got a {type(model).__name__} with inputs "
            f"{None if not inputs else [tuple(t.shape) for t in inputs]}."
        )
    digest = hashlib.sha256(
        json.dumps(model.get_config(), sort_keys=True, default=str).encode()
    )
    return hash_weights(digest, model).hexdigest(), model_to_bytes(model)


def own_model_copy(data, input_size=None):
    """A Functional copy of a user's backbone from its ``.keras`` bytes, taking any
    image size when its layers allow (else the size it was built for)."""
    import keras

    from .._keras_state import model_from_bytes
    from .._nested import flatten_model, has_nested_models

    model = model_from_bytes(data, compile=False, what="`backbone`")
    if isinstance(model, keras.Sequential) or has_nested_models(model):
        # Fresh layers on a fresh input, nested models laid out flat: a Sequential's
        # layers carry nodes of more than one graph, and a nested model's own graph
        # is out of reach of the outer input, either of which hides the edges.
        model = flatten_model(model)
    # Every output is kept: a multi-output backbone is cut by naming a `layer`.
    model = keras.Model(model.inputs[0], _outputs(model), name=model.name)
    shape = (*(input_size or (None, None)), 3)
    if tuple(model.inputs[0].shape[1:]) != shape:
        try:
            resized = keras.models.clone_model(model, input_tensors=keras.Input(shape))
            resized.set_weights(model.get_weights())
            model = keras.Model(resized.inputs[0], _outputs(resized), name=model.name)
        except Exception:  # noqa: BLE001  e.g. a Flatten: it keeps its own size
            pass
    return model


def _outputs(model):
    """``model``'s output tensor, or the list of them when it has several."""
    return model.outputs[0] if len(model.outputs) == 1 else list(model.outputs)


class OwnModelSource(BackboneSource):
    """``backbone=model``: a user's built keras.Model, with the weights it holds."""

    name = "keras.Model"
    renames_layers = False  # a user's layers keep the names they know
    carries_weights = True

    def recognises(self, backbone):
        return not isinstance(backbone, str)

    def resolve(self, backbone):
        sha256, data = own_model_identity(backbone)
        return Network(self.name, model_sha256=sha256, model_data=data)

    def build(self, network, input_size, pretrained):
        return own_model_copy(network.model_data, input_size)

    def display_name(self, network):
        return f"the backbone model {network.model_sha256[:12]}…"

    def key(self, network):
        return network.model_sha256

    def file_label(self, network):
        return f"model{network.model_sha256[:20]}"

    def pretrained_description(self, network):
        return "the backbone model's own weights"

    def base_description(self, network, model):
        return f"the `backbone` model {model.name!r}"
