"""Keras models as bytes, for pickling the estimators that hold one.

Estimators keep their fitted network in ``model_``; :class:`KerasModelState` gives
them a ``__getstate__`` that swaps it for :func:`model_to_bytes` and a
``__setstate__`` that swaps it back with :func:`model_from_bytes`. The bytes are a complete native ``.keras`` archive
(architecture, weights, compile configuration and optimizer state), so the pickle
does not depend on how Keras itself pickles models, and the bytes can be written
straight to a file that ``keras.saving.load_model`` opens.
"""

import os
import tempfile

_FILENAME = "model.keras"


def model_to_bytes(model):
    """Serialize a Keras model to the bytes of a ``.keras`` archive.

    Parameters
    ----------
    model : keras.Model
        A built model. Layers, losses or metrics of custom classes must be
        registered with ``keras.saving.register_keras_serializable`` to be
        loadable again.

    Returns
    -------
    data : bytes
        The ``.keras`` zip archive written by ``model.save``: architecture,
        weights, compile configuration and optimizer state.

    See Also
    --------
    model_from_bytes : The inverse.

    Examples
    --------
    >>> import keras
    >>> from sklearn_convfeat._keras_state import model_from_bytes, model_to_bytes
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> data = model_to_bytes(model)
    >>> data[:2]  # a zip archive, like any .keras file
    b'PK'
    >>> model_from_bytes(data).output_shape
    (None, 2)
    """
    # Keras saves to paths only; a private directory avoids name clashes between
    # threads and processes and is removed even when saving fails.
    with tempfile.TemporaryDirectory(prefix="sklearn_convfeat_") as folder:
        path = os.path.join(folder, _FILENAME)
        model.save(path)
        with open(path, "rb") as file:
            return file.read()


def model_from_bytes(
    data, *, compile=True, custom_objects=None, safe_mode=True, what="The Keras model"
):
    """Rebuild a Keras model from the bytes of a ``.keras`` archive.

    Parameters
    ----------
    data : bytes
        The output of :func:`model_to_bytes`, or the content of any ``.keras``
        file.
    compile : bool, default=True
        Whether to restore the compile configuration and the optimizer state, so
        that the model can go on training. ``False`` loads faster and is enough
        for inference.
    custom_objects : dict or None, default=None
        Custom classes or functions the model uses, as for
        ``keras.saving.load_model``.
    safe_mode : bool, default=True
        Refuse to deserialize ``Lambda`` layers holding arbitrary code, as
        ``keras.saving.load_model`` does. Only set to False for trusted data.
        ``keras.config.enable_unsafe_deserialization()`` overrides it, as in Keras.
    what : str, default="The Keras model"
        What the model is, for the error a ``Lambda`` layer raises.

    Returns
    -------
    model : keras.Model
        A new model, independent of the one that was saved.

    See Also
    --------
    model_to_bytes : The inverse.
    """
    import keras

    with tempfile.TemporaryDirectory(prefix="sklearn_convfeat_") as folder:
        path = os.path.join(folder, _FILENAME)
        with open(path, "wb") as file:
            file.write(data)
        try:
            return keras.saving.load_model(
                path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
            )
        except ValueError as exc:
            lambdas = _python_lambda_layers(data)
            if not lambdas or "lambda" not in str(exc):
                raise
            raise UnsafeLambdaError(_unsafe_lambda_message(what, lambdas)) from exc


class UnsafeLambdaError(ValueError):
    """A network holds a Python-lambda ``Lambda`` layer, which safe mode refuses."""


def _unsafe_lambda_message(what, layers):
    """Why a network with Python-lambda ``Lambda`` layers is refused, and the fixes."""
    names = ", ".join(map(repr, layers))
    which = f"layer {names} wraps" if len(layers) == 1 else f"layers {names} wrap"
    return (
        f"{what} cannot be rebuilt: its `Lambda` {which} a Python lambda, which is "
        "code, and sklearn_convfeat rebuilds Keras networks from their .keras form in "
        "Keras' safe mode so that loading a saved or pickled estimator never runs "
        "code. Use a custom layer instead (a keras.layers.Layer subclass decorated "
        "with @keras.saving.register_keras_serializable()), or, for a model you trust, "
        "call keras.config.enable_unsafe_deserialization() before fitting or loading."
    )


def _python_lambda_layers(data):
    """Names of the ``Lambda`` layers of a ``.keras`` archive holding a Python lambda
    (what Keras' safe mode refuses), nested models included."""
    import io
    import json
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            inner = node.get("config")
            function = inner.get("function") if isinstance(inner, dict) else None
            if (
                node.get("class_name") == "Lambda"
                and isinstance(function, dict)
                and function.get("class_name") == "__lambda__"
            ):
                found.append(inner.get("name"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


class KerasModelState:
    """Mixin of the estimators holding a fitted Keras model in ``model_``.

    Pickles (and ``clone``-free copies) carry the model as ``.keras`` bytes, never
    through Keras' own pickling. Subclasses whose models use custom layers
    override :meth:`_register_keras_objects` to register them before loading.
    """

    _MODEL_BYTES_KEY = "_model_keras_bytes"

    def __getstate__(self):
        # A copy: object.__getstate__ may return the instance __dict__ itself.
        state = dict(super().__getstate__())
        if "model_" in state:
            state[self._MODEL_BYTES_KEY] = model_to_bytes(state.pop("model_"))
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop(self._MODEL_BYTES_KEY, None)
        super().__setstate__(state)
        if data is not None:
            self._register_keras_objects()
            _register_keras_hub(data)
            self.model_ = model_from_bytes(
                data, what=f"The network of this saved {type(self).__name__}"
            )

    def _register_keras_objects(self):
        """Register the custom Keras classes ``model_`` uses; none by default."""


class SavedKerasModel:
    """A keras.Model parameter inside a pickle: its ``.keras`` bytes."""

    def __init__(self, data, fitted):
        self.data = data
        self.fitted = fitted  # the very model the estimator was fitted with


def backbone_token(backbone):
    """What the fitted-settings check compares for a ``backbone`` parameter: the name,
    or the identity of the keras.Model object."""
    return backbone if isinstance(backbone, str) else ("keras.Model", id(backbone))


class BackboneParameterState:
    """Mixin pickling a keras.Model ``backbone`` parameter as ``.keras`` bytes.

    When the parameter is the model the estimator was fitted with, the bytes of the
    fitted weights source are reused (pickle stores one copy), and after unpickling
    the new model counts as the fitted one.
    """

    def __getstate__(self):
        state = dict(super().__getstate__())
        backbone = state.get("backbone")
        if backbone is not None and not isinstance(backbone, str):
            fitted_settings = state.get("_fitted_settings") or {}
            fitted = fitted_settings.get("backbone") == backbone_token(backbone)
            source = state.get("_weights_source")
            data = getattr(source, "model_data", None) if fitted else None
            state["backbone"] = SavedKerasModel(data or model_to_bytes(backbone), fitted)
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.get("backbone")
        if isinstance(saved, SavedKerasModel):
            _register_keras_hub(saved.data)
            model = model_from_bytes(
                saved.data, compile=False,
                what=f"The `backbone` of this saved {type(self).__name__}",
            )
            state["backbone"] = model
            if saved.fitted and "_fitted_settings" in state:
                state["_fitted_settings"] = {
                    **state["_fitted_settings"], "backbone": backbone_token(model)
                }
        super().__setstate__(state)


def _register_keras_hub(data):
    """Import keras-hub when a saved model holds its classes: importing it is what
    registers them for loading (in safe mode, as every load here)."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = archive.read("config.json")
    except (zipfile.BadZipFile, KeyError):
        return
    if b'"keras_hub' in config or b"sklearn_convfeat>Loadable_" in config:
        import keras_hub  # noqa: F401

        from ._backbones._hub_layouts import register_loadable_layers

        register_loadable_layers(config)
