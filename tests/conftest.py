import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from pathlib import Path

import keras  # noqa: F401  imported once up front: it raises the recursion limit
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL_WEIGHTS = Path(
    os.environ.get(
        "SKLEARN_CONVFEAT_TEST_WEIGHTS",
        REPO.parent / "shared" / "weights" / "vgg16_imagenet_notop.weights.h5",
    )
)


@pytest.fixture(autouse=True)
def _no_weights_override(monkeypatch):
    # A developer's own SKLEARN_CONVFEAT_WEIGHTS must not change what tests see.
    monkeypatch.delenv("SKLEARN_CONVFEAT_WEIGHTS", raising=False)


@pytest.fixture
def empty_ram_cache():
    """The in-memory feature cache empty before and after the test."""
    from sklearn_convfeat import _cache

    _cache.clear_ram_cache()
    yield
    _cache.clear_ram_cache()


@pytest.fixture
def segment_calls(monkeypatch):
    """(start layer, stop layer, number of inputs) of every pass the cache makes."""
    from sklearn_convfeat import _backbone

    calls = []
    real = _backbone.get_segment

    def spy(source, start, stop, preprocessing, capture=()):
        segment = real(source, start, stop, preprocessing, capture)

        def run(inputs):
            calls.append((start, stop, len(inputs)))
            return segment(inputs)

        return run

    monkeypatch.setattr(_backbone, "get_segment", spy)
    return calls


@pytest.fixture
def real_weights():
    """Path of the shared ImageNet VGG16 base; the test is skipped without it."""
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"real VGG16 weights not found at {REAL_WEIGHTS}")
    return str(REAL_WEIGHTS)


@pytest.fixture
def images():
    """Six 36×36 RGB uint8 images."""
    return np.random.default_rng(0).integers(0, 256, size=(6, 36, 36, 3), dtype=np.uint8)


def make_image_folder(root, counts=None, size=(40, 40), ext=".png"):
    """A class-per-folder tree of small images whose brightness depends on the class."""
    counts = counts or {"cats": 3, "dogs": 3}
    rng = np.random.default_rng(1)
    for label, (class_name, count) in enumerate(sorted(counts.items())):
        folder = Path(root) / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = 60 + 120 * label
            pixels = np.clip(rng.normal(base, 30, size=(*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{class_name}.{i}{ext}")
    return Path(root)


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "data")


def pytest_collection_modifyitems(config, items):
    # Tiers by cost: the largest networks and the full export matrix run with
    # -m large_backbone; the minutes-long cases (benchmark scripts, the docs build,
    # Dask clusters, fine-tuning matrices) with -m slow, which CI runs too.
    selected = config.getoption("-m") or ""
    for marker, reason in (
        ("large_backbone", "large backbone: run with -m large_backbone"),
        ("slow", "slow tier: run with -m slow (CI does)"),
    ):
        if marker in selected:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@contextlib.contextmanager
def fresh_keras_home(tmp_path_factory):
    """A fresh KERAS_HOME (cluster workers inherit it), the export caches emptied
    before and after; yields the folder the exports land in."""
    from sklearn_convfeat import _backends

    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        _backends.clear_cache()
        yield home / "sklearn_convfeat"
    _backends.clear_cache()


def in_fresh_process(estimator, method, X, tmp_path):
    """``getattr(estimator, method)(X)`` in a new Python process that unpickles it."""
    import pickle
    import subprocess
    import sys

    np.save(tmp_path / "fresh_x.npy", X)
    script = (
        "import pickle, sys, numpy as np; e = pickle.load(sys.stdin.buffer); "
        f"np.save({str(tmp_path / 'fresh_out.npy')!r}, "
        f"e.{method}(np.load({str(tmp_path / 'fresh_x.npy')!r})))"
    )
    run = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(estimator),
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return np.load(tmp_path / "fresh_out.npy")


# --- keras-hub presets ----------------------------------------------------------

HUB_MEAN, HUB_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _save_preset(folder, backbone, converter):
    backbone.save_to_preset(str(folder))
    if converter is not None:
        converter.save_to_preset(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    """{family: preset folder}: DINOv2 with 4 registers (2 blocks, 64 wide, 56 px),
    CLIP and SigLIP with 2-block vision towers, ViT with 3 blocks (32 px): tiny random
    presets keras-hub itself saves, for the tests of keras-hub backbones."""
    keras_hub = pytest.importorskip(
        "keras_hub", reason="keras-hub backbones need the hub extra (keras-hub >= 0.32)"
    )
    from keras_hub.src.models.clip.clip_text_encoder import CLIPTextEncoder
    from keras_hub.src.models.clip.clip_vision_encoder import CLIPVisionEncoder
    from keras_hub.src.models.siglip.siglip_text_encoder import SigLIPTextEncoder
    from keras_hub.src.models.siglip.siglip_vision_encoder import SigLIPVisionEncoder

    root = tmp_path_factory.mktemp("presets")
    tower = dict(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
                 image_shape=(32, 32, 3))
    text = dict(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
                intermediate_dim=64, max_sequence_length=8)
    return {
        "dinov2": _save_preset(
            root / "dinov2",
            keras_hub.models.DINOV2Backbone(
                patch_size=14, num_layers=2, hidden_dim=64, num_heads=2, intermediate_dim=128,
                num_register_tokens=4, image_shape=(56, 56, 3),
                position_embedding_shape=(56, 56, 3),
            ),
            keras_hub.layers.DINOV2ImageConverter(
                image_size=(56, 56), scale=(1 / (255 * HUB_STD)).tolist(),
                offset=(-HUB_MEAN / HUB_STD).tolist(), interpolation="bicubic",
            ),
        ),
        "clip": _save_preset(
            root / "clip",
            keras_hub.models.CLIPBackbone(
                vision_encoder=CLIPVisionEncoder(**tower),
                text_encoder=CLIPTextEncoder(**text), projection_dim=16,
            ),
            keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=0.0146, offset=-1.79),
        ),
        "siglip": _save_preset(
            root / "siglip",
            keras_hub.models.SigLIPBackbone(
                vision_encoder=SigLIPVisionEncoder(**tower),
                text_encoder=SigLIPTextEncoder(**text),
            ),
            keras_hub.layers.SigLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1),
        ),
        "vit": _save_preset(
            root / "vit",
            keras_hub.models.ViTBackbone(
                image_shape=(32, 32, 3), patch_size=8, num_layers=3, num_heads=2,
                hidden_dim=32, mlp_dim=64,
            ),
            None,
        ),
    }


@pytest.fixture(scope="session")
def pixels():
    """Six 40×40 RGB uint8 images, for the keras-hub backbones' tests."""
    return np.random.default_rng(0).integers(0, 256, size=(6, 40, 40, 3), dtype=np.uint8)
