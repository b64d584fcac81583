"""The keras.applications convnets by name: their family, input size, preprocessing.

A backbone is named by its ``keras.applications`` constructor, matched without regard
to case or punctuation (``"resnet50"``, ``"EfficientNetV2B0"``, ``"convnext_tiny"``).
Its family is the ``keras.applications`` module it lives in, which also holds the
``preprocess_input`` its ImageNet weights expect.
"""

import difflib
import re

import numpy as np

# keras.applications constructor → (family module, native size, Keras' notop weights file)
_ARCHITECTURES = {
    "VGG16": ("vgg16", 224, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "VGG19": ("vgg19", 224, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{
        f"ResNet{depth}": ("resnet", 224,
                           f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")
        for depth in (50, 101, 152)
    },
    **{
        f"ResNet{depth}V2": ("resnet_v2", 224,
                             f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
        for depth in (50, 101, 152)
    },
    "MobileNet": ("mobilenet", 224, "mobilenet_1_0_224_tf_no_top.h5"),
    "MobileNetV2": (
        "mobilenet_v2", 224,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "MobileNetV3Small": (
        "mobilenet_v3", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    ),
    "MobileNetV3Large": (
        "mobilenet_v3", 224, "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"
    ),
    **{
        f"EfficientNetB{k}": ("efficientnet", size, f"efficientnetb{k}_notop.h5")
        for k, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
    },
    **{
        f"EfficientNetV2{variant}": (
            "efficientnet_v2", size, f"efficientnetv2-{variant.lower()}_notop.h5"
        )
        for variant, size in (
            ("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300),
            ("S", 384), ("M", 480), ("L", 480),
        )
    },
    **{
        f"ConvNeXt{size_name}": ("convnext", 224, f"convnext_{size_name.lower()}_notop.h5")
        for size_name in ("Tiny", "Small", "Base", "Large", "XLarge")
    },
    **{
        f"DenseNet{depth}": ("densenet", 224,
                             f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")
        for depth in (121, 169, 201)
    },
    "Xception": ("xception", 299, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "InceptionV3": (
        "inception_v3", 299, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "InceptionResNetV2": (
        "inception_resnet_v2", 299,
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "NASNetMobile": ("nasnet", 224, "nasnet_mobile_no_top.h5"),
    "NASNetLarge": ("nasnet", 331, "nasnet_large_no_top.h5"),
}
# Parameters of each include_top=False base (read from the built graphs): what a
# weights file of unknown origin is compared with.
_PARAMETERS = {
    "VGG16": 14_714_688,
    "VGG19": 20_024_384,
    "ResNet50": 23_587_712,
    "ResNet101": 42_658_176,
    "ResNet152": 58_370_944,
    "ResNet50V2": 23_564_800,
    "ResNet101V2": 42_626_560,
    "ResNet152V2": 58_331_648,
    "MobileNet": 3_228_864,
    "MobileNetV2": 2_257_984,
    "MobileNetV3Small": 939_120,
    "MobileNetV3Large": 2_996_352,
    "EfficientNetB0": 4_049_571,
    "EfficientNetB1": 6_575_239,
    "EfficientNetB2": 7_768_569,
    "EfficientNetB3": 10_783_535,
    "EfficientNetB4": 17_673_823,
    "EfficientNetB5": 28_513_527,
    "EfficientNetB6": 40_960_143,
    "EfficientNetB7": 64_097_687,
    "EfficientNetV2B0": 5_919_312,
    "EfficientNetV2B1": 6_931_124,
    "EfficientNetV2B2": 8_769_374,
    "EfficientNetV2B3": 12_930_622,
    "EfficientNetV2S": 20_331_360,
    "EfficientNetV2M": 53_150_388,
    "EfficientNetV2L": 117_746_848,
    "ConvNeXtTiny": 27_820_128,
    "ConvNeXtSmall": 49_454_688,
    "ConvNeXtBase": 87_566_464,
    "ConvNeXtLarge": 196_230_336,
    "ConvNeXtXLarge": 348_147_968,
    "DenseNet121": 7_037_504,
    "DenseNet169": 12_642_880,
    "DenseNet201": 18_321_984,
    "Xception": 20_861_480,
    "InceptionV3": 21_802_784,
    "InceptionResNetV2": 54_336_736,
    "NASNetMobile": 4_269_716,
    "NASNetLarge": 84_916_818,
}

ARCHITECTURES = tuple(_ARCHITECTURES)
FAMILIES = tuple(sorted({family for family, _, _ in _ARCHITECTURES.values()}))
# Families whose Keras models normalise their own input: preprocess_input is identity.
_SELF_NORMALISING = {"efficientnet", "efficientnet_v2", "convnext", "mobilenet_v3"}
PREPROCESSING_MODES = ("auto", "rescale", "none", *FAMILIES)
IMAGENET_MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)


def _normalised(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_normalised(name): name for name in ARCHITECTURES}


def resolve_architecture(name):
    """The keras.applications constructor name ``name`` means, e.g. ``"ResNet50"``."""
    found = _BY_KEY.get(_normalised(name))
    if found is not None:
        return found
    close = difflib.get_close_matches(_normalised(name), list(_BY_KEY), n=1, cutoff=0.5)
    hint = f" Did you mean {_BY_KEY[close[0]]!r}?" if close else ""
    raise ValueError(
        f"`backbone` must be a keras.Model or the name of a keras.applications convnet "
        f"(case-insensitive): one of {', '.join(ARCHITECTURES)}. Got {name!r} instead."
        f"{hint}"
    )


def family(architecture):
    """The keras.applications module of ``architecture``: its preprocessing's name."""
    return _ARCHITECTURES[architecture][0]


def native_size(architecture):
    """(height, width) the ImageNet weights of ``architecture`` were trained at."""
    size = _ARCHITECTURES[architecture][1]
    return size, size


def keras_weights_file(architecture):
    """The file name Keras downloads the notop ImageNet weights to, in ~/.keras/models."""
    return _ARCHITECTURES[architecture][2]


def build_architecture(architecture, weights=None, input_shape=(None, None, 3)):
    """``keras.applications.<architecture>(include_top=False)``, by default for any
    image size."""
    import keras

    constructor = getattr(keras.applications, architecture)
    return constructor(weights=weights, include_top=False, input_shape=input_shape)


def needs_fixed_size(architecture):
    """Whether the network must be built for one image size (NASNet's cells crop by
    their static input shape)."""
    return architecture is not None and family(architecture) == "nasnet"


def identify_by_parameters(n_parameters):
    """The keras.applications base with exactly that many parameters, or None."""
    matches = [name for name, count in _PARAMETERS.items() if count == n_parameters]
    return matches[0] if len(matches) == 1 else None


def own_model_identity(model):
    """(sha256 over configuration and weights, ``.keras`` bytes) of a user's backbone."""
    import hashlib
    import json

    from ._keras_state import model_to_bytes

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


def hash_weights(digest, model):
    """``digest`` updated with the model's weight arrays (float32 little-endian, in
    order): the one definition of a network's weights identity."""
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest


def own_model_copy(data, input_size=None):
    """A Functional copy of a user's backbone from its ``.keras`` bytes, taking any
    image size when its layers allow (else the size it was built for)."""
    import keras

    from ._keras_state import model_from_bytes
    from ._nested import flatten_model, has_nested_models

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


def resolve_preprocessing(preprocessing, architecture):
    """The preprocessing mode ``"auto"`` stands for: the family's, or ``"none"`` for a
    model of one's own (``architecture=None``)."""
    if preprocessing != "auto":
        return preprocessing
    return "none" if architecture is None else family(architecture)


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
