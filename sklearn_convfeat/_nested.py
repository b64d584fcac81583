"""A backbone with models nested in it, made into one Functional graph of layers.

A model of one's own often calls another model: a keras.applications network between
a ``Rescaling`` and a head, in a Sequential or a Functional model. In the outer graph
that network is one operation whose ``output`` belongs to its own graph, so its
stages, cut points and layers cannot be reached from the outer input. The copy made
here calls a fresh copy of every layer on the outer tensors instead (weights copied):
a nested model's layers become top-level layers under their own names, and a name
that another layer of the backbone also has is prefixed with the nested model's name
(``"<model>_<layer>"``).
"""

from collections import Counter


def has_nested_models(model):
    """Whether ``model`` calls a Sequential or Functional model among its layers."""
    from ._cam._keras_graph import is_graph_model, sublayers

    return any(is_graph_model(layer) for layer in sublayers(model))


def flatten_model(model):
    """A Functional copy of ``model`` (Sequential or Functional) with the same weights,
    nested Sequential and Functional models replaced by their layers.

    Raises ``ValueError`` when a nested model is called more than once (shared): its
    layers would need two places in one graph.
    """
    import keras

    from ._cam._keras_graph import is_graph_model, sublayers

    names = _flat_names(model)
    copies = {}  # id(original layer) -> (original, copy)
    calls = Counter()

    def copy_of(layer):
        if is_graph_model(layer):
            return layer  # inlined when called
        if id(layer) not in copies:
            config = {**layer.get_config(), "name": names[id(layer)]}
            copies[id(layer)] = (layer, type(layer).from_config(config))
        return copies[id(layer)][1]

    def call(layer, *args, **kwargs):
        if not is_graph_model(layer):
            return layer(*args, **kwargs)
        calls[id(layer)] += 1
        if calls[id(layer)] > 1:
            raise ValueError(
                "`backbone` must call each nested model once, so that each of its "
                "layers has one place in the backbone's graph. Got a backbone calling "
                f"its nested model {layer.name!r} more than once (shared weights): "
                "call a copy at each place (keras.models.clone_model, then "
                "set_weights), or pass the nested model itself as the backbone."
            )
        # The package runs the base with training=False, which reaches every layer.
        kwargs.pop("training", None)
        if any(value is not None for value in kwargs.values()):
            raise ValueError(
                "`backbone` must call its nested models on a tensor alone (and "
                f"`training`). Got its nested model {layer.name!r} called with "
                f"{sorted(kwargs)}: call it without them."
            )
        return run(layer, args[0])

    def run(owner, inputs):
        if isinstance(owner, keras.Sequential):
            x = inputs
            for layer in sublayers(owner):
                x = call(copy_of(layer), x)
            return x
        # Private, as in _cam._keras_graph: clone_model would build a model on the
        # outer tensors, which adds a second node to every layer copy.
        outputs = keras.tree.flatten(owner._run_through_graph(
            keras.tree.flatten(inputs),
            operation_fn=copy_of, call_fn=call,
        ))
        return outputs[0] if len(outputs) == 1 else outputs

    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    outputs = keras.tree.flatten(run(model, inputs))
    flat = keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)
    for original, copy in copies.values():
        copy.set_weights(original.get_weights())
    return flat


def _flat_names(model):
    """{id(layer): its name in the flat graph} for the layers and operations of
    ``model`` and of the models nested in it."""
    from ._cam._keras_graph import is_graph_model, sublayers

    owners = {}  # id(layer) -> (layer, the model calling it)
    stack = [model]
    while stack:
        owner = stack.pop()
        for layer in sublayers(owner):
            if is_graph_model(layer):
                stack.append(layer)
            else:
                owners.setdefault(id(layer), (layer, owner))
    counts = Counter(layer.name for layer, _ in owners.values())
    names = {
        key: layer.name if owner is model or counts[layer.name] == 1
        else f"{owner.name}_{layer.name}"
        for key, (layer, owner) in owners.items()
    }
    clashes = sorted(name for name, count in Counter(names.values()).items() if count > 1)
    if clashes:
        raise ValueError(
            f"`backbone` must have distinct layer names once its nested models are laid "
            f"out as one graph (a nested layer whose name is taken is renamed "
            f"'<nested model>_<layer>'). Got {clashes} more than once: rename those "
            "layers or the nested models."
        )
    return names
