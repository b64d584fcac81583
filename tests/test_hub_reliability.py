"""keras-hub presets carried by reference: the fitted weights' sha256 is checked when
the base is built again; a mixed comparison of convnets and transformers."""

import pickle
import shutil

import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub backbones need the hub extra")

from sklearn_convfeat import ConvFeatureExtractor, compare_backbones  # noqa: E402


def test_a_preset_whose_weights_changed_is_refused_after_loading(presets, pixels, tmp_path):
    folder = shutil.copytree(presets["vit"], tmp_path / "vit")
    extractor = ConvFeatureExtractor(backbone=str(folder), image_size=None, pooling="cls")
    data = pickle.dumps(extractor.fit(pixels))
    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    backbone.set_weights([w * 1.5 for w in backbone.get_weights()])
    backbone.save_to_preset(str(folder))  # same configuration, other weights
    from sklearn_convfeat import _backbone

    _backbone.clear_cache()  # as in a fresh process
    with pytest.raises(RuntimeError, match="changed since this extractor was fitted"):
        pickle.loads(data).transform(pixels)


def test_compare_skips_the_poolings_a_kind_of_network_refuses(presets, pixels):
    lines = []
    result = compare_backbones(
        pixels, [0, 1, 1, 0, 1, 0], backbones=["vgg16", presets["dinov2"]], layers=[5],
        poolings=["avg", "max", "cls+avg"], cv=2, weights=None, image_size=56,
        random_state=0, verbose=1, progress=lines.append,
    )
    combos = sorted((row["layer_name"], row["pooling"]) for row in result.rows)
    assert combos == [("block5_pool", "avg"), ("block5_pool", "max"),
                      ("final_norm", "avg"), ("final_norm", "cls+avg")]
    assert any("pooling='max' skipped for" in line for line in lines)
    assert any("pooling='cls+avg' skipped for vgg16" in line for line in lines)
    with pytest.raises(ValueError, match="Got pooling='cls'"):
        compare_backbones(pixels, [0, 1] * 3, backbones=["vgg16"], layers=[5], poolings=["cls"],
                          cv=2, weights=None, image_size=32)


def test_a_folder_named_like_a_keras_applications_network_is_not_a_preset(tmp_path, monkeypatch):
    from sklearn_convfeat._backbones import find_source

    (tmp_path / "vgg16").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_source("vgg16").name == "keras.applications"
    (tmp_path / "my_preset").mkdir()
    assert find_source("my_preset").name == "keras-hub"
