"""What every backbone shares: preprocessing modes, blank pixels, layer names.

The sources of backbones (keras.applications names, one's own models) live in
:mod:`._backbones`; the names this module held before are re-exported from there.
The preprocessing modes are the keras.applications families' ``preprocess_input``
plus ``"rescale"`` and ``"none"``.
"""

import re

import numpy as np

from ._backbones import (  # noqa: F401  re-exported: imported from here before
    ARCHITECTURES,
    FAMILIES,
    build_architecture,
    family,
    identify_by_parameters,
    keras_weights_file,
    native_size,
    needs_fixed_size,
    own_model_copy,
    own_model_identity,
    resolve_architecture,
)

# Families whose Keras models normalise their own input: preprocess_input is identity.
_SELF_NORMALISING = {"efficientnet", "efficientnet_v2", "convnext", "mobilenet_v3"}
PREPROCESSING_MODES = ("auto", "rescale", "none", *FAMILIES)
IMAGENET_MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)


def hash_weights(digest, model):
    """``digest`` updated with the model's weight arrays (float32 little-endian, in
    order): the one definition of a network's weights identity."""
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest


def preprocess(images, preprocessing):
    """RGB images in [0, 255] → what the base expects, as a tensor.

    A family name applies ``keras.applications.<family>.preprocess_input`` (Caffe BGR
    mean for VGG/ResNet, [-1, 1] for MobileNet/Xception/Inception/ResNetV2/NASNet,
    torch mean/std for DenseNet, identity for the families whose models normalise
    their own input); ``"rescale"`` is the book's ``x / 255``; ``"none"`` passes the
    pixels on unchanged.
    """
    import keras

    images = keras.ops.convert_to_tensor(images)  # numpy input would be edited in place
    if preprocessing == "rescale":
        return images / 255.0
    if preprocessing == "none":
        return images
    return getattr(keras.applications, preprocessing).preprocess_input(images)


def blank_pixel(preprocessing):
    """The RGB pixel carrying no information once preprocessed: what the base sees as
    0 (the ImageNet mean colour for the Caffe and torch modes, mid-grey for [-1, 1]);
    the ImageNet mean for the self-normalising families; black otherwise."""
    if preprocessing in ("rescale", "none"):
        return np.zeros(3, dtype=np.float32)
    if preprocessing in _SELF_NORMALISING:
        return IMAGENET_MEAN_RGB.copy()
    # Every other mode is affine per channel: solve preprocess(pixel) = 0.
    ends = np.asarray(
        preprocess(np.array([[[[0.0] * 3, [255.0] * 3]]], np.float32), preprocessing)
    )[0, 0]
    slope = (ends[1] - ends[0]) / 255.0
    pixel = -ends[0] if np.allclose(slope, 1.0, atol=1e-5) else -ends[0] / slope
    if preprocessing in ("vgg16", "vgg19", "resnet"):  # caffe: channels come out BGR
        pixel = pixel[::-1]
    return pixel.astype(np.float32)


def snake_case(class_name):
    """Keras' automatic layer name for a class: ``"Conv2D"`` → ``"conv2d"``."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def canonical_names(model, rename_layers=True):
    """Give automatically named operations the names a fresh process would give.

    Keras numbers unnamed layers and operations with process-wide counters, so a
    second InceptionV3 built in one process has ``conv2d_94`` where the first had
    ``conv2d``. Cut points, cache entries and pickles refer to layers by name, so
    bases renumber them in network order. ``rename_layers=False`` renames only
    operations that are not layers (a user's layers keep the names they know).
    """
    import keras

    def children(container):
        return [
            operation for operation in getattr(container, "operations", container.layers)
            if not isinstance(operation, keras.layers.InputLayer)
        ]

    def renamed(operation):
        is_layer = isinstance(operation, keras.layers.Layer)
        prefix = snake_case(type(operation).__name__)
        automatic = re.fullmatch(re.escape(prefix) + r"(_\d+)?", operation.name)
        return (rename_layers or not is_layer) and automatic is not None

    def walk(container):
        for operation in children(container):
            yield operation
            if isinstance(operation, keras.Model):
                yield from walk(operation)

    operations = list(walk(model))
    taken = {operation.name for operation in operations if not renamed(operation)}
    counts = {}
    for operation in operations:
        if not renamed(operation):
            continue
        prefix = snake_case(type(operation).__name__)
        while True:
            count = counts.get(prefix, 0)
            counts[prefix] = count + 1
            name = prefix if count == 0 else f"{prefix}_{count}"
            if name not in taken:
                break
        operation.name = name
    return model
