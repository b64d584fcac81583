"""keras-hub's vision transformers laid out as one flat graph, a cut after every block.

keras-hub builds DINOv2 and ViT with their blocks inside one encoder layer, and CLIP
and SigLIP as a vision tower inside a two-tower model. Cut points, stages and the
feature cache need each block to be an operation of the base's own graph, so the
base is rebuilt from fresh copies of the pieces, in order::

    images -> image_converter -> embeddings -> block_1 ... block_D -> final_norm
           [-> image_embedding]   (CLIP and SigLIP: the vector zero-shot compares)

Each supported class has a :class:`Family`: where its pieces are, how its
configuration reads, how many tokens (class, registers) precede the patch tokens.
"""

from typing import NamedTuple

import numpy as np

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalisation(mean, std):
    """(scale, offset) that map pixels in [0, 255] to (x / 255 - mean) / std."""
    std = np.asarray(std)
    return (1.0 / (255.0 * std)).tolist(), (-np.asarray(mean) / std).tolist()


class Pieces(NamedTuple):
    stem: list  # (name, layer) pairs: patches to tokens
    blocks: list  # the transformer blocks, in order
    final_norm: object
    head: list  # (name, layer) pairs after the final norm: the image embedding


class Family(NamedTuple):
    name: str
    vision_config: object  # the backbone's config → its vision tower's config
    pieces: object  # a built backbone → Pieces
    prefix_tokens: object  # vision config → tokens before the patches
    interpolates: bool  # position embeddings follow `image_shape` (any size)
    normalisation: tuple  # (scale, offset) for a backbone without an ImageConverter


def _own_config(config):
    return config


def _tower_config(config):
    return config["vision_encoder"]["config"]


def _dinov2_pieces(backbone):
    return Pieces(
        [("embeddings", backbone.embeddings)], list(backbone.encoder.layers),
        backbone.layernorm, [],
    )


def _vit_pieces(backbone):
    embedding = next(
        layer for layer in backbone.layers if type(layer).__name__ == "ViTPatchingAndEmbedding"
    )
    encoder = backbone.get_layer("vit_encoder")
    return Pieces(
        [("embeddings", embedding)], list(encoder.encoder_layers), encoder.layer_norm, []
    )


def _clip_pieces(backbone):
    tower = backbone.vision_encoder
    return Pieces(
        [("embeddings", tower.embedding), ("embeddings_norm", tower.pre_layer_norm)],
        list(tower.encoder_layers),
        tower.layer_norm,
        [("class_token", backbone.vision_pooler),
         ("image_embedding", backbone.vision_projection)],
    )


def _siglip_pieces(backbone):
    tower = backbone.vision_encoder
    return Pieces(
        [("embeddings", tower.embedding)], list(tower.encoder_layers),
        tower.post_layer_norm, [("image_embedding", tower.head)],
    )


FAMILIES = {
    "DINOV2Backbone": Family(
        "DINOv2", _own_config, _dinov2_pieces,
        lambda config: 1 + int(config.get("num_register_tokens", 0)),
        True, _normalisation(_IMAGENET_MEAN, _IMAGENET_STD),
    ),
    "ViTBackbone": Family(
        "ViT", _own_config, _vit_pieces,
        lambda config: 1 if config.get("use_class_token", True) else 0,
        False, _normalisation((0.5,) * 3, (0.5,) * 3),
    ),
    "CLIPBackbone": Family(
        "CLIP", _tower_config, _clip_pieces, lambda config: 1,
        False, _normalisation(_CLIP_MEAN, _CLIP_STD),
    ),
    "SigLIPBackbone": Family(
        "SigLIP", _tower_config, _siglip_pieces, lambda config: 0,
        False, _normalisation((0.5,) * 3, (0.5,) * 3),
    ),
}
SUPPORTED_CLASSES = tuple(FAMILIES)


class Description(NamedTuple):
    """What a preset's configuration says, read without building the network."""

    class_name: str
    family: Family
    patch_size: int
    image_size: tuple  # (height, width) it is configured for
    depth: int  # transformer blocks
    prefix_tokens: int


def describe(config):
    """The :class:`Description` of a backbone configuration (``config.json``'s
    content); ``KeyError`` for a class without a family here."""
    class_name = config["class_name"]
    family = FAMILIES[class_name]
    vision = family.vision_config(config["config"])
    image_shape = vision.get("image_shape") or (224, 224, 3)
    patch = vision["patch_size"]
    return Description(
        class_name, family, int(patch[0] if isinstance(patch, (list, tuple)) else patch),
        (int(image_shape[0]), int(image_shape[1])), int(vision["num_layers"]),
        family.prefix_tokens(vision),
    )


def outputs_tokens(name):
    """Whether the flat base's layer ``name`` outputs tokens (not the image, nor the
    image embedding)."""
    return name in ("embeddings", "embeddings_norm", "final_norm") or name.startswith("block_")


def token_layers(names):
    """(the layers of ``names`` that output tokens, the input of the last block among
    them: where a class token reads the patch tokens, CAM's default layer)."""
    layers = [name for name in names if outputs_tokens(name)]
    blocks = [name for name in layers if name.startswith("block_")]
    return layers, blocks[-2] if len(blocks) > 1 else "embeddings"


def stage_blocks(depth, n_stages=5):
    """Blocks ending stages 1..n_stages - 1: stage N ends after block round(N·D/5),
    never before block 1 (stage 5 ends at the final norm)."""
    return [max(1, int(np.floor(stage * depth / n_stages + 0.5))) for stage in range(1, n_stages)]


def _copy(layer, name):
    config = {**layer.get_config(), "name": name}
    try:
        return type(layer).from_config(config)
    except (TypeError, ValueError):  # keras-hub 0.32's ViT layers: see loadable_class
        return loadable_class(type(layer)).from_config(config)


def loadable_class(cls):
    """A registered subclass of ``cls`` whose configuration round-trips.

    Some keras-hub layers (ViT's patching layer and blocks in 0.32) put values in
    their config that their constructor refuses, so a model holding them cannot be
    copied or loaded. The subclass keeps only what the constructor takes.
    """
    import inspect

    import keras

    name = f"Loadable_{cls.__name__}"
    registered = keras.saving.get_registered_object(f"sklearn_convfeat>{name}")
    if registered is not None:
        return registered
    accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable", "dtype"}

    def get_config(self):
        return {key: value for key, value in cls.get_config(self).items() if key in accepted}

    def from_config(klass, config):
        return klass(**{key: value for key, value in config.items() if key in accepted})

    subclass = type(cls.__name__, (cls,), {
        "get_config": get_config, "from_config": classmethod(from_config),
        "__module__": __name__,
    })
    return keras.saving.register_keras_serializable("sklearn_convfeat", name)(subclass)


def register_loadable_layers(config):
    """Register the loadable subclasses a saved model's ``config`` (the bytes of its
    config.json) names, before loading it (a FineTuner's network in a fresh process)."""
    import re
    import sys

    for class_name in set(re.findall(rb"sklearn_convfeat>Loadable_(\w+)", config)):
        class_name = class_name.decode()
        for module_name, module in list(sys.modules.items()):
            cls = getattr(module, class_name, None) if module_name.startswith("keras_hub.src") else None
            if isinstance(cls, type):
                loadable_class(cls)
                break


def flat_base(backbone, image_shape, normalisation, name):
    """A Functional base from ``backbone``'s pieces (fresh copies, same weights).

    ``image_shape`` is (height, width, 3); ``normalisation`` the (scale, offset) of
    its ImageConverter, applied first to RGB pixels in [0, 255].
    """
    import keras

    pieces = FAMILIES[type(backbone).__name__].pieces(backbone)
    inputs = keras.Input(image_shape, name="images")
    scale, offset = normalisation
    x = keras.layers.Rescaling(scale, offset, name="image_converter")(inputs)
    pairs = [
        *pieces.stem,
        *((f"block_{i}", block) for i, block in enumerate(pieces.blocks, start=1)),
        ("final_norm", pieces.final_norm),
        *pieces.head,
    ]
    copies = []
    for piece_name, layer in pairs:
        copy = _copy(layer, piece_name)
        if piece_name == "embeddings":
            _declare_true_shape(copy, layer, image_shape)
        x = copy(x)
        copies.append((copy, layer))
    for copy, layer in copies:
        copy.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=name)


def _declare_true_shape(copy, layer, image_shape):
    """Make ``copy`` declare the token count ``layer`` really outputs: SigLIP's
    embedding declares a class token it does not add (keras-hub 0.32), which would
    make the graph's shapes disagree with the tensors (FineTuner's cached prefix)."""
    import numpy as np

    true_shape = tuple(layer(np.zeros((1, *image_shape), "float32")).shape[1:])
    declared = tuple(copy.compute_output_shape((1, *image_shape))[1:])
    if declared != true_shape:
        # On this one copy only: keras-hub's class stays as it is.
        copy.compute_output_shape = lambda input_shape: (input_shape[0], *true_shape)
