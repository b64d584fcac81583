"""
=========================================================
A keras-hub vision transformer as the backbone: DINOv2
=========================================================

``ConvFeatureExtractor(backbone=...)`` also takes keras-hub's vision transformers
(DINOv2, ViT, CLIP's and SigLIP's image towers): a preset name such as
``"dinov2_small"``, a ``kaggle://`` or ``hf://`` handle, or a local preset folder,
which is what this example uses. ``layer=1`` … ``5`` cut after blocks of the
transformer, and ``pooling`` reads its tokens: ``"cls"`` (the class token), ``"avg"``
(the mean of the patch tokens), ``"cls+avg"`` (both, DINOv2's linear-evaluation
recipe) or ``"flatten"`` (every patch token).

The documentation is built offline, so this example cannot download the real
``dinov2_small``: it builds a **tiny DINOv2 with random weights** (5 blocks, 64 wide,
56×56 pixels) with keras-hub, saves it as a preset folder, and searches the stage and
the pooling on generated pictures (a disc or square of a warm or a cool tint on grey
noise, as in the other examples, the tints muted so that the task is not trivial). Its
accuracies say how the search works, not how good DINOv2's features are. The real
network is one line on a machine with internet (see the end).
"""

# %%
# Data
# ----
import numpy as np


def make_pictures(n_per_class, size=64, seed=0):
    """Two classes of generated RGB pictures, uint8, and their labels: the other
    examples' pictures, with muted tints."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images, labels = [], []
    for label, colour in (("cool", (85, 110, 135)), ("warm", (135, 110, 85))):
        for _ in range(n_per_class):
            image = rng.normal(110, 20, size=(size, size, 3))
            radius = rng.uniform(0.15, 0.3) * size
            row, col = rng.uniform(radius, size - radius, size=2)
            if rng.random() < 0.5:
                inside = (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
            else:
                inside = (abs(rows - row) <= 0.85 * radius) & (
                    abs(cols - col) <= 0.85 * radius
                )
            image[inside] = np.asarray(colour) + rng.normal(0, 20, size=3)
            images.append(image)
            labels.append(label)
    return np.clip(np.stack(images), 0, 255).astype(np.uint8), np.asarray(labels)


X, y = make_pictures(30, size=56)
print(f"{len(X)} generated pictures of {X.shape[1]}x{X.shape[2]} pixels")

# %%
# A preset folder
# ---------------
# What ``Backbone.save_to_preset`` and ``ImageConverter.save_to_preset`` write:
# ``config.json``, ``model.weights.h5`` and ``image_converter.json``. The converter
# holds the input normalisation (here DINOv2's: ImageNet mean and standard
# deviation), which the extractor builds into its base with
# ``preprocessing="auto"``; the extractor resizes the images itself.
import tempfile

import keras
import keras_hub

keras.utils.set_random_seed(0)  # the same random weights on every build
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
folder = tempfile.mkdtemp(prefix="dinov2_tiny_")
tiny = keras_hub.models.DINOV2Backbone(
    patch_size=14, num_layers=5, hidden_dim=64, num_heads=2, intermediate_dim=128,
    image_shape=(56, 56, 3), position_embedding_shape=(56, 56),
)
tiny.save_to_preset(folder)
keras_hub.layers.DINOV2ImageConverter(
    image_size=(56, 56), scale=(1 / (255 * STD)).tolist(), offset=(-MEAN / STD).tolist(),
    interpolation="bicubic",
).save_to_preset(folder)

# %%
# The folder as a backbone
# ------------------------
# ``image_size=None`` is the preset's own size (56 here; 518 for keras-hub's DINOv2
# presets, and any multiple of the patch size 14 works for DINOv2). The random weights
# are the folder's, as ``weights="imagenet"`` (the default) would read a real preset's
# pretrained ones.
from sklearn_convfeat import ConvFeatureExtractor

extractor = ConvFeatureExtractor(backbone=folder, image_size=None, pooling="cls+avg")
extractor.fit(X)
print(f"native size {extractor.image_size_}, cut at {extractor.layer_!r}, "
      f"{extractor.feature_map_shape_[0]} tokens of width "
      f"{extractor.feature_map_shape_[1]}, {extractor.n_features_out_} features")
stage_names = {
    layer: ConvFeatureExtractor(backbone=folder, image_size=None, layer=layer).fit(X[:1]).layer_
    for layer in (1, 2, 3, 4, 5)
}
print("stages:", stage_names)

# %%
# Which stage and which pooling?
# ------------------------------
# One search over both, 3-fold. With a feature cache (``memory=``) the transformer
# runs once per image: the stage-5 pass keeps every earlier stage's tokens, and the
# poolings of a stage share them.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

cache = tempfile.mkdtemp(prefix="feature_cache_")
pipe = Pipeline([
    ("feat", ConvFeatureExtractor(backbone=folder, image_size=None, memory=cache)),
    ("clf", LogisticRegression(max_iter=1000)),
])
poolings = ["cls", "avg", "cls+avg"]
search = GridSearchCV(
    pipe, {"feat__layer": [5, 4, 3, 2, 1], "feat__pooling": poolings}, cv=3
).fit(X, y)
print(f"best: {search.best_params_}, CV accuracy {search.best_score_:.3f}")

# %%
# Accuracy by stage
# -----------------
import matplotlib.pyplot as plt

results = search.cv_results_
fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
for offset, pooling in zip((-0.12, 0.0, 0.12), poolings):
    rows = [
        i for i, params in enumerate(results["params"]) if params["feat__pooling"] == pooling
    ]
    rows.sort(key=lambda i: results["params"][i]["feat__layer"])
    stages = np.array([results["params"][i]["feat__layer"] for i in rows])
    ax.errorbar(
        stages + offset, results["mean_test_score"][rows],
        yerr=results["std_test_score"][rows], marker="o", capsize=3,
        label=f'pooling="{pooling}"',
    )
ax.set_xticks(list(stage_names), [f"{n}\n{name}" for n, name in stage_names.items()])
ax.set_xlabel("layer (stage) and where it cuts")
ax.set_ylabel("cross-validated accuracy")
ax.legend()
fig.suptitle("tiny DINOv2, random weights, generated pictures (offline build)")

# %%
# With random weights the class token has learned nothing to gather: the mean of the
# patch tokens carries the tint better, and the first blocks, which have mixed the
# tokens least, keep it best. A pretrained DINOv2 is trained to summarise the image in
# its class token, and its last blocks hold its most abstract features, so on real
# photos the ordering may well reverse: the search, not this figure, decides.

# %%
# With the real network
# ---------------------
# On a machine with internet access and the hub extra
# (``pip install "sklearn-convfeat[hub]"``, Python 3.11 or later), the preset name is
# enough; keras-hub downloads it once into its cache::
#
#     ConvFeatureExtractor(backbone="dinov2_small", image_size=224, pooling="cls+avg")
#
# ``image_size=224`` keeps the cost near VGG16's (see the user guide's
# :ref:`backbones`); ``None`` runs DINOv2 at its native 518 pixels, several times
# slower. For a machine without internet, write a preset folder where there is
# internet and copy it over::
#
#     b = keras_hub.models.Backbone.from_preset("dinov2_small")
#     b.save_to_preset("dinov2_small_folder")
#     keras_hub.layers.ImageConverter.from_preset("dinov2_small").save_to_preset(
#         "dinov2_small_folder")
#
# and pass ``backbone="dinov2_small_folder"``. The extractor records the folder, the
# sha256 of its configuration and of the weights it was fitted with, and refuses to
# compute if either has changed.
import shutil

shutil.rmtree(cache)
shutil.rmtree(folder)
