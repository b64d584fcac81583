"""Backbones from keras-hub: vision transformers by preset name, handle or folder.

``backbone=`` may be a keras-hub preset name (``"dinov2_small"``,
``"siglip2_base_patch16_224"``, ``"clip_vit_base_patch16"``, ``"vit_base_patch16_224_imagenet"``),
a ``kaggle://`` or ``hf://`` handle, a local preset folder (what
``Backbone.save_to_preset`` and ``ImageConverter.save_to_preset`` write), or a built
``keras_hub.models.Backbone``. keras-hub is an optional extra
(``pip install "sklearn-convfeat[hub]"``), imported only when such a value is used.

A preset is carried by reference (its name, handle or folder) and identified by
the sha256 of its configuration; the estimators also record the sha256 of the
weights they were fitted with and check it whenever the base is rebuilt (another
process, a loaded file), so a preset whose weights changed is refused, never used
silently. A built Backbone object is carried as ``.keras`` bytes, like one's own
model. Nothing is ever loaded with Keras' safe mode off: a preset cannot run code.
"""

import difflib
import hashlib
import json
import os
import re

from ._hub_layouts import (
    FAMILIES,
    SUPPORTED_CLASSES,
    describe,
    flat_base,
    outputs_tokens,
    stage_blocks,
)
from ._source import BackboneSource, Network

_EXTRA = 'pip install "sklearn-convfeat[hub]"'
_HANDLE = re.compile(r"^(kaggle|hf)://", re.IGNORECASE)
# Preset names of the supported families start so (keras-hub 0.32's names).
_PREFIXES = ("dinov2_", "dinov3_", "siglip", "medsiglip", "clip_", "metaclip", "vit_")
_CONFIG, _WEIGHTS, _CONVERTER = "config.json", "model.weights.h5", "image_converter.json"
_TOKEN_POOLINGS = ("cls", "avg", "cls+avg", "flatten", "embedding")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as exc:
        raise ImportError(
            "keras-hub backbones (presets, preset folders) need the optional keras-hub "
            f"package, which is not installed: {_EXTRA}."
        ) from exc
    return keras_hub


def _is_hub_object(backbone):
    return any(
        cls.__module__.startswith("keras_hub.") and cls.__name__ == "Backbone"
        for cls in type(backbone).__mro__
    )


def supported_presets():
    """keras-hub's preset names of the supported vision backbones, sorted."""
    keras_hub = _keras_hub()
    names = set()
    for class_name in SUPPORTED_CLASSES:
        names |= set(getattr(keras_hub.models, class_name).presets)
    return sorted(names)


class _Preset:
    """What a preset's files say: its configuration, its converter, its identity."""

    def __init__(self, config, converter, sha256):
        self.config = config
        self.converter = converter  # the ImageConverter's config, or None
        self.sha256 = sha256
        self.description = describe(config)

    @property
    def native_size(self):
        if self.converter and self.converter.get("image_size"):
            return tuple(int(side) for side in self.converter["image_size"])
        return self.description.image_size

    @property
    def normalisation(self):
        converter = self.converter or {}
        if converter.get("scale") is None and converter.get("offset") is None:
            return self.description.family.normalisation
        return converter.get("scale") or 1.0, converter.get("offset") or 0.0


_PRESETS = {}  # (architecture, model_sha256) -> _Preset, read once per process


class HubSource(BackboneSource):
    """``backbone="dinov2_small"`` (or a handle, a preset folder, a built Backbone)."""

    name = "keras-hub"
    renames_layers = False  # the flat base names its pieces itself

    def recognises(self, backbone):
        if isinstance(backbone, str):
            if _is_applications_name(backbone):  # even with a folder of that name here
                return False
            return bool(
                _HANDLE.match(backbone)
                or os.path.isdir(os.path.expanduser(backbone))
                or backbone.lower().startswith(_PREFIXES)
            )
        return _is_hub_object(backbone)

    def resolve(self, backbone):
        if not isinstance(backbone, str):
            return self._resolve_object(backbone)
        folder = os.path.expanduser(backbone)
        if os.path.isdir(folder):
            handle = os.path.abspath(folder)
            preset = _read_folder(handle)
        else:
            keras_hub = _keras_hub()
            handle = backbone if _HANDLE.match(backbone) else _preset_name(backbone)
            preset = _read_remote(keras_hub, handle)
        network = Network(self.name, architecture=handle, model_sha256=preset.sha256)
        _PRESETS[network.architecture, network.model_sha256] = preset
        return network

    def _resolve_object(self, backbone):
        _keras_hub()
        class_name = type(backbone).__name__
        _check_class(class_name, "`backbone`")
        from .._architectures import hash_weights
        from .._keras_state import model_to_bytes

        config = {"class_name": class_name, "config": backbone.get_config()}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        sha256 = hash_weights(digest, backbone).hexdigest()
        network = Network(self.name, model_sha256=sha256, model_data=model_to_bytes(backbone))
        _PRESETS[None, sha256] = _Preset(json.loads(json.dumps(config, default=str)), None, sha256)
        return network

    def _preset(self, network):
        key = (network.architecture, network.model_sha256)
        if key not in _PRESETS:  # another process: read it again, and check it is the same
            if network.architecture is None:
                _PRESETS[key] = _object_preset(network.model_data, network.model_sha256)
            elif self.local_paths(network) and not os.path.isdir(network.architecture):
                raise FileNotFoundError(
                    f"The keras-hub preset folder {network.architecture!r} this "
                    "estimator was fitted with is not on this machine. Copy the folder "
                    "to that path, or fit the estimator again with backbone= its path "
                    "here."
                )
            elif self.resolve(network.architecture).model_sha256 != network.model_sha256:
                raise ValueError(
                    f"The keras-hub preset {network.architecture!r} changed since this "
                    "estimator was fitted (its configuration is not the one it was "
                    "fitted with). Fit the estimator again to use the preset as it is now."
                )
        return _PRESETS[key]

    def build(self, network, input_size, pretrained):
        keras_hub = _keras_hub()
        if network.model_data is not None:
            return self._build_object(network, input_size)
        preset = self._preset(network)
        kwargs = {}
        if input_size and tuple(input_size) != preset.description.image_size:
            kwargs["image_shape"] = (*input_size, 3)
        try:
            backbone = keras_hub.models.Backbone.from_preset(
                network.architecture, load_weights=pretrained, **kwargs
            )
        except Exception as exc:  # noqa: BLE001  keras-hub raises many kinds
            raise _load_error(network.architecture, exc, pretrained) from exc
        return flat_base(
            backbone, (*(input_size or preset.native_size), 3), preset.normalisation,
            name=preset.description.family.name.lower(),
        )

    def _build_object(self, network, input_size):
        import tempfile

        keras_hub = _keras_hub()
        from .._keras_state import model_from_bytes

        backbone = model_from_bytes(network.model_data, compile=False, what="`backbone`")
        preset = self._preset(network)
        if input_size and tuple(input_size) != preset.description.image_size:
            with tempfile.TemporaryDirectory(prefix="sklearn_convfeat_") as folder:
                backbone.save_to_preset(folder)
                backbone = keras_hub.models.Backbone.from_preset(
                    folder, image_shape=(*input_size, 3)
                )
        return flat_base(
            backbone, (*(input_size or preset.native_size), 3), preset.normalisation,
            name=preset.description.family.name.lower(),
        )

    def display_name(self, network):
        family = self._preset(network).description.family.name
        if network.architecture is None:
            return f"the keras-hub {family} backbone {network.model_sha256[:12]}…"
        return f"the keras-hub {family} preset {network.architecture!r}"

    def key(self, network):
        return f"keras-hub:{network.architecture or 'model'}:{network.model_sha256}"

    def file_label(self, network):
        family = self._preset(network).description.family.name.lower()
        return f"{family}_{network.model_sha256[:20]}"

    def native_size(self, network):
        return self._preset(network).native_size

    def fixed_input_size(self, network, image_size):
        preset = self._preset(network)
        description = preset.description
        size = tuple(image_size or preset.native_size)
        patch = description.patch_size
        name = self.display_name(network)
        if size != preset.native_size and not description.family.interpolates:
            raise ValueError(
                f"`image_size` must be {preset.native_size} (or None) for {name}: "
                f"keras-hub builds {description.family.name}'s position embeddings for "
                f"that size only. Got image_size={size!r} instead."
            )
        if size[0] != size[1] or size[0] % patch:
            raise ValueError(
                f"`image_size` must be square and a multiple of the patch size {patch} "
                f"for {name} (e.g. {(patch * 16,) * 2}, or None for its native "
                f"{preset.native_size}). Got image_size={size!r} instead."
            )
        return size

    def default_preprocessing(self, network):
        return "none"  # the preset's ImageConverter scale and offset begin the base

    def stage_ends(self, network, model):
        depth = self._preset(network).description.depth
        ends = {stage: f"block_{block}" for stage, block in enumerate(stage_blocks(depth), 1)}
        return {**ends, 5: "final_norm"}

    def prefix_tokens(self, network):
        return self._preset(network).description.prefix_tokens

    def frozen_layers(self, network):
        # keras-hub saves DINOv2's position embeddings through an interpolation to
        # their pretraining size and back, which trained values would not survive.
        return ("embeddings",) if self._preset(network).description.family.name == "DINOv2" else ()

    def token_count(self, network, image_size):
        description = self._preset(network).description
        patch = description.patch_size
        return description.prefix_tokens + (image_size[0] // patch) * (image_size[1] // patch)

    def pooling(self, network, pooling, layer, entry):
        from .._pooling import TokenPooling

        name = self.display_name(network)
        prefix = self.prefix_tokens(network)
        graph = entry.graph
        if pooling not in _TOKEN_POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {', '.join(map(repr, _TOKEN_POOLINGS))} for "
                f"{name}, a vision transformer. Got pooling={pooling!r} instead: a "
                "maximum over token positions is not a feature transformers are read "
                "by; use 'avg' (mean of the patch tokens) or 'cls'."
            )
        if pooling == "embedding":
            if graph.names[-1] == "final_norm":
                raise ValueError(
                    f"pooling='embedding' is the image embedding of CLIP and SigLIP "
                    f"vision towers; {name} has none. Use pooling='cls' or 'cls+avg'."
                )
            if layer != graph.stage_ends[5]:
                raise ValueError(
                    "pooling='embedding' reads the network's own image embedding, after "
                    f"its last block: `layer` must be 5. Got layer={layer!r} instead."
                )
        elif pooling in ("cls", "cls+avg") and prefix == 0:
            raise ValueError(
                f"pooling={pooling!r} needs a class token, and {name} has none (SigLIP "
                "pools its tokens with an attention head). Use pooling='avg' or "
                "'embedding'."
            )
        elif not outputs_tokens(layer):
            raise ValueError(
                f"`layer` must output tokens for pooling={pooling!r}: one of "
                f"'embeddings', 'block_1' … 'block_{self._preset(network).description.depth}',"
                f" 'final_norm' of {name}, or a stage number. Got layer={layer!r}."
            )
        return TokenPooling(pooling, prefix)

    def local_paths(self, network):
        folder = network.architecture  # a folder's is absolute; names and handles are not
        return (folder,) if folder is not None and os.path.isabs(folder) else ()

    def pretrained_description(self, network):
        if network.architecture is None:
            return "the keras-hub backbone's own weights"
        return f"the pretrained weights of keras-hub preset {network.architecture!r}"

    def base_description(self, network, model):
        return f"the flat base of {self.display_name(network)}"


def _object_preset(data, sha256):
    """The :class:`_Preset` of a built Backbone carried as ``.keras`` bytes."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        saved = json.loads(archive.read("config.json"))
    return _Preset({"class_name": saved["class_name"], "config": saved["config"]}, None, sha256)


def _is_applications_name(name):
    from ._applications import resolve_architecture

    try:
        resolve_architecture(name)
    except ValueError:
        return False
    return True


def _check_class(class_name, what):
    if class_name not in FAMILIES:
        raise ValueError(
            f"{what} must be a keras-hub vision backbone of one of the classes "
            f"{', '.join(SUPPORTED_CLASSES)}. Got a {class_name} instead."
        )


def _preset_name(name):
    presets = supported_presets()
    if name in presets:
        return name
    close = difflib.get_close_matches(name.lower(), presets, n=5, cutoff=0.5)
    raise ValueError(
        "`backbone` must be a keras-hub preset of a supported vision backbone "
        f"({', '.join(SUPPORTED_CLASSES)}), a kaggle:// or hf:// handle, or a local "
        f"preset folder. Got {name!r}, which is none of those."
        + (f" Closest presets: {', '.join(close)}." if close else "")
    )


def _sha256_of(*parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part or b"")
        digest.update(b"\0")
    return digest.hexdigest()


def _read_folder(folder):
    config_path = os.path.join(folder, _CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(
            f"`backbone` folder {folder!r} is not a keras-hub preset: it has no "
            f"{_CONFIG}. A preset folder holds {_CONFIG}, {_WEIGHTS} and {_CONVERTER}, "
            "as `backbone.save_to_preset(folder)` and "
            "`image_converter.save_to_preset(folder)` write them."
        )
    has_weights = any(
        name == _WEIGHTS or name.endswith(".safetensors") or name.endswith("sharded.json")
        for name in os.listdir(folder)
    )
    if not has_weights:
        raise ValueError(
            f"`backbone` folder {folder!r} has no {_WEIGHTS}: save the weights with "
            "`backbone.save_to_preset(folder)`, or pass weights=None for random ones."
        )
    with open(config_path, "rb") as file:
        config_bytes = file.read()
    converter_bytes = None
    converter_path = os.path.join(folder, _CONVERTER)
    if os.path.isfile(converter_path):
        with open(converter_path, "rb") as file:
            converter_bytes = file.read()
    return _preset_from(folder, config_bytes, converter_bytes)


def _preset_from(where, config_bytes, converter_bytes):
    try:
        config = json.loads(config_bytes)
        class_name = config["class_name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"The keras-hub preset {where!r} has a {_CONFIG} that is not a Keras "
            "configuration. Write it again with `backbone.save_to_preset(folder)`."
        ) from exc
    if class_name not in FAMILIES:
        keras_hub = _keras_hub()
        known = hasattr(keras_hub.models, class_name)
        raise ValueError(
            f"The keras-hub preset {where!r} is a {class_name}, "
            + ("which is not a supported vision backbone" if known
               else f"a class keras-hub {keras_hub.__version__} lacks")
            + f": supported are {', '.join(SUPPORTED_CLASSES)}."
        )
    converter = None
    if converter_bytes:
        converter = json.loads(converter_bytes).get("config")
    return _Preset(config, converter, _sha256_of(config_bytes, converter_bytes))


def _read_remote(keras_hub, handle):
    from keras_hub.src.utils import preset_utils

    try:
        config_bytes = json.dumps(preset_utils.load_json(handle, _CONFIG)).encode()
    except Exception as exc:  # noqa: BLE001  offline, no such handle
        raise _load_error(handle, exc, pretrained=False) from exc
    try:
        converter_bytes = json.dumps(preset_utils.load_json(handle, _CONVERTER)).encode()
    except Exception:  # noqa: BLE001  a preset without a converter
        converter_bytes = None
    return _preset_from(handle, config_bytes, converter_bytes)


def _load_error(handle, exc, pretrained):
    from .._weights import WeightsUnavailableError

    if os.path.isdir(handle):
        return ValueError(
            f"The keras-hub preset folder {handle!r} could not be loaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
            f"its {_WEIGHTS} does not fit its {_CONFIG}. Write both again with "
            "`backbone.save_to_preset(folder)`"
            + (", or pass weights=None for random weights." if pretrained else ".")
        )
    return WeightsUnavailableError(
        f"Could not obtain the keras-hub preset {handle!r} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}). keras-hub downloads presets "
        "through its own cache (Kaggle / Hugging Face). Without internet access, make "
        "a local preset folder on a machine that has it: "
        f"`b = keras_hub.models.Backbone.from_preset({handle!r}); b.save_to_preset(d); "
        f"keras_hub.layers.ImageConverter.from_preset({handle!r}).save_to_preset(d)`, "
        "copy d here and pass backbone=d."
    )
