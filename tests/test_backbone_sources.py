"""The backbone source registry: each source's contract, and a fourth source plugged in.

A source is one class (:class:`BackboneSource`) plus one registration; the toy source
below goes through ConvFeatureExtractor without any other change.
"""

import pickle

import numpy as np
import pytest

from sklearn_convfeat import ConvFeatureExtractor
from sklearn_convfeat._backbones import (
    ApplicationsSource,
    BackboneSource,
    Network,
    OwnModelSource,
    backbone_sources,
    find_source,
    register_source,
    resolve_backbone,
    source_named,
    unregister_source,
)
from sklearn_convfeat._extractor import weights_source
from sklearn_convfeat._weights import WeightsSource


def _tiny_model(name="tiny"):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    outputs = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    return keras.Model(inputs, outputs, name=name)


class ToySource(BackboneSource):
    """Names ``"toy:<anything>"``: a fixed tiny network with fixed "pretrained" weights."""

    name = "toy"

    def recognises(self, backbone):
        return isinstance(backbone, str) and backbone.startswith("toy:")

    def resolve(self, backbone):
        if backbone != "toy:tiny":
            raise ValueError(f"`backbone` must be 'toy:tiny'. Got {backbone!r} instead.")
        return Network(self.name, architecture="tiny")

    def build(self, network, input_size, pretrained):
        model = _tiny_model()
        if pretrained:
            model.set_weights([
                np.linspace(-1, 1, w.size, dtype="float32").reshape(w.shape)
                for w in model.get_weights()
            ])
        return model

    def display_name(self, network):
        return f"the toy {network.architecture} network"

    def key(self, network):
        return f"toy-{network.architecture}"

    def native_size(self, network):
        return (16, 16)

    def default_preprocessing(self, network):
        return "rescale"


@pytest.fixture
def toy_source():
    source = register_source(ToySource())
    yield source
    unregister_source(source.name)


def test_the_built_in_sources_in_the_order_they_are_asked():
    names = [source.name for source in backbone_sources()]
    assert names == ["keras-hub", "keras.applications", "keras.Model"]
    assert source_named("keras.applications").name == "keras.applications"
    with pytest.raises(LookupError, match="backbone source 'nope', which is not registered"):
        source_named("nope")


def test_the_applications_source_resolves_names_and_suggests_close_ones():
    source = ApplicationsSource()
    assert source.recognises("resnet50") and source.recognises("no such net")
    assert not source.recognises(_tiny_model())
    network = source.resolve("convnext_tiny")
    assert network == Network("keras.applications", architecture="ConvNeXtTiny")
    assert source.native_size(network) == (224, 224)
    assert source.default_preprocessing(network) == "convnext"
    assert source.weights_file_name(network) == "convnext_tiny_notop.h5"
    assert source.fixed_input_size(network, (64, 64)) is None
    assert source.fixed_input_size(source.resolve("NASNetMobile"), (224, 224)) == (224, 224)
    with pytest.raises(ValueError, match=r"keras.applications convnet.*Did you mean 'ResNet50'"):
        source.resolve("resnet5O")


def test_the_own_model_source_identifies_models_by_content():
    import keras

    source = OwnModelSource()
    model = _tiny_model()
    assert source.recognises(model) and not source.recognises("vgg16")
    network = source.resolve(model)
    assert network.backbone_source == "keras.Model" and network.architecture is None
    assert source.resolve(model).model_sha256 == network.model_sha256
    assert source.resolve(_tiny_model()).model_sha256 != network.model_sha256
    assert source.native_size(network) is None
    assert source.default_preprocessing(network) == "none"
    assert source.file_label(network) == f"model{network.model_sha256[:20]}"
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`backbone` must be a built keras.Model"):
        source.resolve(unbuilt)


def test_resolution_asks_the_sources_in_order():
    assert isinstance(find_source("vgg16"), ApplicationsSource)
    assert isinstance(find_source(_tiny_model()), OwnModelSource)
    network, image_size = resolve_backbone("nasnetmobile")
    assert image_size == (224, 224) and network.input_size == (224, 224)
    network, image_size = resolve_backbone(_tiny_model())
    assert image_size is None and network.input_size is None


def test_a_record_pickled_before_sources_were_plug_ins_still_loads():
    for record in (
        WeightsSource("random", seed=3, architecture="ResNet50"),
        WeightsSource("imagenet", architecture=None, model_sha256="ab" * 32, model_data=b"x"),
    ):
        state = dict(vars(record))
        del state["backbone_source"]  # what the HEAD before plug-ins pickled
        restored = WeightsSource.__new__(WeightsSource)
        restored.__setstate__(state)
        assert restored == record and hash(restored) == hash(record)
        assert pickle.loads(pickle.dumps(restored)) == record


def test_a_registered_fourth_source_runs_through_the_extractor(toy_source):
    X = np.random.default_rng(0).integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
    assert find_source("toy:tiny") is toy_source  # asked before keras.applications
    extractor = ConvFeatureExtractor(
        backbone="toy:tiny", layer="conv2", pooling="avg", image_size=None
    )
    features = extractor.fit_transform(X)
    assert features.shape == (3, 6)
    assert extractor.image_size_ == (16, 16)  # its native size
    assert extractor.preprocessing_ == "rescale"  # its "auto"
    source = weights_source(extractor)
    assert source.backbone_source == "toy" and source.network == "the toy tiny network"
    loaded = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(loaded.transform(X), features)
    random = ConvFeatureExtractor(backbone="toy:tiny", weights=None, layer="conv2").fit(X)
    assert weights_source(random).kind == "random"
    assert random.weights_sha256_ != extractor.weights_sha256_
    with pytest.raises(ValueError, match="must be 'toy:tiny'"):
        ConvFeatureExtractor(backbone="toy:other").fit(X)
    with pytest.raises(ValueError, match="already registered"):
        register_source(ToySource())
