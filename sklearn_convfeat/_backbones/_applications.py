"""Backbones from keras.applications, named by their constructor.

A name is matched without regard to case or punctuation (``"resnet50"``,
``"EfficientNetV2B0"``, ``"convnext_tiny"``). Its family is the ``keras.applications``
module it lives in, which also holds the ``preprocess_input`` its ImageNet weights
expect.
"""

import difflib
import re

from ._source import BackboneSource, Network

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



class ApplicationsSource(BackboneSource):
    """``backbone="vgg16"``: a keras.applications convnet, by name.

    It claims every string, so that a misspelt name gets the closest names; a source
    of other names (presets, handles) is registered before it.
    """

    name = "keras.applications"

    def recognises(self, backbone):
        return isinstance(backbone, str)

    def resolve(self, backbone):
        return Network(self.name, architecture=resolve_architecture(backbone))

    def build(self, network, input_size, pretrained):
        shape = (*(input_size or (None, None)), 3)
        if not pretrained:
            return build_architecture(network.architecture, input_shape=shape)
        from .._weights import WEIGHTS_ENV_VAR, WeightsUnavailableError

        try:
            return build_architecture(network.architecture, "imagenet", input_shape=shape)
        except Exception as exc:  # Keras raises plain Exception on URL failures
            name = keras_weights_file(network.architecture)
            raise WeightsUnavailableError(
                f"Could not obtain the ImageNet {network.architecture} weights through "
                f"Keras ({exc}). Without internet access, either pass the path of a local "
                f"copy, weights='/path/to/{name}', or put it under that name in "
                f"~/.keras/models/ (Keras' cache, used offline) or in a folder named by "
                f"the environment variable {WEIGHTS_ENV_VAR}. The file is what "
                f"{_download(network.architecture)}, or any Model.save_weights() of that "
                "base."
            ) from exc

    def display_name(self, network):
        return network.architecture

    def key(self, network):
        return network.architecture

    def native_size(self, network):
        return native_size(network.architecture)

    def fixed_input_size(self, network, image_size):
        if needs_fixed_size(network.architecture) and image_size:
            return tuple(image_size)
        return None

    def default_preprocessing(self, network):
        return family(network.architecture)

    def speed_family(self, network):
        return family(network.architecture)

    def weights_file_name(self, network):
        return keras_weights_file(network.architecture)

    def pretrained_description(self, network):
        return f"{network.architecture} ImageNet weights from Keras' cache"

    def environment_file_fix(self, network):
        return (
            f"Put the {network.architecture} notop weights there (what "
            f"{_download(network.architecture)}), or remove the file to let Keras "
            "download them."
        )

    def base_description(self, network, model):
        return f"the {network.architecture} convolutional base (include_top=False)"


def _download(architecture):
    return (
        f"keras.applications.{architecture}(weights='imagenet', include_top=False) "
        "downloads"
    )
