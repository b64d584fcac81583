"""
========================================================
Choosing the cut depth: accuracy against the VGG16 block
========================================================

Where to cut the convolutional base is a hyper-parameter like any other:
``ConvFeatureExtractor(layer=N)`` keeps blocks 1 to N. Lower blocks hold generic
features (edges, colours, textures), upper ones more abstract, ImageNet-specific
ones. :class:`~sklearn.model_selection.GridSearchCV` over ``feat__layer`` lets
cross-validation choose, and its ``cv_results_`` draw the curve of accuracy against
depth.

With ``SKLEARN_CONVFEAT_WEIGHTS`` and ``SKLEARN_CONVFEAT_DATA`` set, this searches the
ImageNet base on a subset of cats and dogs; otherwise random weights on generated
pictures (see the gallery's introduction). The figure's title says which mode drew it.
"""

# %%
# Data
# ----
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
    X, y = every_kth("train", 300)
    settings = dict(weights=WEIGHTS, image_size=150)
else:
    MODE = "random weights, generated pictures (offline build)"
    X, y = make_pictures(30, size=48)
    settings = dict(weights=None, image_size=48, random_state=0)
print(f"mode: {MODE}; {len(X)} images")

# %%
# The search
# ----------
# Blocks 3, 4 and 5, the feature maps flattened, 3-fold cross-validation. Each
# candidate and fold runs the base on its images again; the base itself is built once
# and shared by every clone the search makes.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_convfeat import ConvFeatureExtractor

pipe = Pipeline(
    [
        ("feat", ConvFeatureExtractor(**settings)),
        ("clf", LogisticRegression(max_iter=1000)),
    ]
)
search = GridSearchCV(pipe, {"feat__layer": [3, 4, 5]}, cv=3).fit(X, y)
print(
    f"best: block {search.best_params_['feat__layer']}, "
    f"CV accuracy {search.best_score_:.3f}"
)

# %%
# Accuracy against depth
# ----------------------
# Mean and standard deviation over the folds, and the mean fit time of each
# candidate: a deeper cut costs more of the forward pass, a shallower one hands the
# classifier more features (block3_pool flattened is twice block4_pool's).
import matplotlib.pyplot as plt

results = search.cv_results_
layers = np.asarray(results["param_feat__layer"], dtype=int)
fig, (ax, ax_time) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
ax.errorbar(
    layers,
    results["mean_test_score"],
    yerr=results["std_test_score"],
    marker="o",
    capsize=4,
)
ax.set_xticks(layers, [f"block{layer}_pool" for layer in layers])
ax.set_ylabel("cross-validated accuracy")
ax.set_title("accuracy")
ax_time.bar([f"block{layer}_pool" for layer in layers], results["mean_fit_time"])
ax_time.set_ylabel("seconds per fit (features + classifier)")
ax_time.set_title("cost")
fig.suptitle(f"GridSearchCV over feat__layer: {MODE}")

# %%
# On the 2000 training images of cats vs dogs with the ImageNet weights, 5-fold
# cross-validation ranks block 5 first, then 4, then 3 (see :doc:`/benchmarks`): the
# photographs are close to ImageNet, so its most abstract features serve best. The
# best cut depends on the images; the search, not a rule of thumb, decides.
