"""
============================================
Where does the model look? Grad-CAM overlays
============================================

Fit frozen VGG16 features with a :class:`~sklearn.linear_model.LogisticRegression`,
then ask which parts of each image the decision rests on with
:func:`sklearn_convfeat.cam` (Grad-CAM), lay the heatmaps over the pictures with
:func:`sklearn_convfeat.overlay`, and draw image, heatmap and overlay side by side in
one call with :func:`sklearn_convfeat.plot_cam`.

With ``SKLEARN_CONVFEAT_WEIGHTS`` and ``SKLEARN_CONVFEAT_DATA`` set, this runs the
ImageNet weights on cats and dogs; otherwise random weights on generated pictures
(see the gallery's introduction). The figure titles say which mode drew them.
"""

# %%
# The data: real photographs, or generated pictures
# -------------------------------------------------
# In the offline mode each picture holds one disc or square, warm-coloured (class
# ``"warm"``) or cool-coloured (class ``"cool"``), at a random place on a noisy grey
# background: the evidence for the class is the shape, and a heatmap that points at
# it is right.
import os

import numpy as np

from sklearn_convfeat import load_image_folder

WEIGHTS = os.environ.get("SKLEARN_CONVFEAT_WEIGHTS")
DATA = os.environ.get("SKLEARN_CONVFEAT_DATA")
REAL = bool(WEIGHTS and DATA and os.path.isfile(WEIGHTS) and os.path.isdir(DATA))


def make_pictures(n_per_class, size=64, seed=0):
    """Two classes of generated RGB pictures, uint8, and their labels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images, labels = [], []
    for label, colour in (("cool", (40, 120, 230)), ("warm", (230, 120, 40))):
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


def every_kth(split, n):
    """``n`` image paths of DATA/split, spread over its classes, and their labels."""
    paths, y, class_names = load_image_folder(os.path.join(DATA, split))
    rows = np.linspace(0, len(paths) - 1, n).astype(int)
    return paths[rows], np.asarray(class_names)[y[rows]]


if REAL:
    MODE = "ImageNet weights, cats_and_dogs_small"
    X_train, y_train = every_kth("train", 200)
    X_show, _ = every_kth("test", 4)
    settings = dict(weights=WEIGHTS, image_size=150)  # cut at block5_pool, flattened
else:
    MODE = "random weights, generated pictures (offline build)"
    X_train, y_train = make_pictures(40)
    X_show, _ = make_pictures(2, seed=1)
    settings = dict(weights=None, image_size=64, random_state=0)
print(f"mode: {MODE}; {len(X_train)} training images")

# %%
# Fit the pipeline
# ----------------
# Features of the frozen base cut at block5_pool, flattened, and a linear model on
# them: the first row of the README's accuracy table.
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sklearn_convfeat import ConvFeatureExtractor

pipe = Pipeline(
    [
        ("feat", ConvFeatureExtractor(**settings)),
        ("clf", LogisticRegression(max_iter=1000)),
    ]
).fit(X_train, y_train)
print("predicted:", pipe.predict(X_show))

# %%
# Heatmaps and overlays
# ---------------------
# :func:`~sklearn_convfeat.cam` explains the predicted class of each image on the last
# convolutional layer before the cut (``block5_conv3``). For a linear classifier on the
# cut's features the gradient is exact: the coefficients laid out over the feature
# map. Each heatmap is in [0, 1] at its image's own size, and
# :func:`~sklearn_convfeat.overlay` blends it over the picture.
import matplotlib.pyplot as plt

from sklearn_convfeat import cam, overlay

heatmaps = cam(pipe, X_show)
fig, axes = plt.subplots(
    1, len(X_show), figsize=(3 * len(X_show), 3.4), layout="constrained"
)
for ax, image, heatmap, label in zip(axes, X_show, heatmaps, pipe.predict(X_show)):
    ax.imshow(overlay(image, heatmap, alpha=0.4))
    ax.set_title(str(label))
    ax.set_axis_off()
fig.suptitle(f"Grad-CAM overlays: {MODE}")

# %%
# The same in one call
# --------------------
# :func:`~sklearn_convfeat.plot_cam` computes the heatmaps and draws, for each image,
# the picture with the explained class and its probability, the heatmap and the
# overlay. ``path="cam.png"`` would also save it.
from sklearn_convfeat import plot_cam

figure = plot_cam(pipe, X_show[:2])
figure.suptitle(MODE)

# %%
# On the real photographs the heatmaps cover the animals' heads (:doc:`/cam` shows
# overlays of fully trained models and measures how faithful they are). Random
# weights have learned nothing about the pictures, so the offline build's heatmaps
# only show the mechanics: where the linear model's coefficients, laid over random
# features, happen to weigh, sometimes on the coloured shape and often beside it.
# They are not explanations.
