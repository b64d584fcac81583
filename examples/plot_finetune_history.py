"""
===========================================
Fine-tuning: learning curves of both phases
===========================================

:class:`~sklearn_convfeat.FineTuner` follows the book's recipe (§5.3.2): phase 1
trains the dense head on the frozen VGG16 base, phase 2 unfreezes the top block
(``unfreeze=1``: block5) and trains it with the head at a lower learning rate. Its
``history_`` holds the loss and accuracy of every epoch of both phases, on the
training and the validation images, with each epoch's ``phase``, learning rate and
wall time; ``fine_tune_start_`` is the first epoch of phase 2. This example draws
them, with the learning-rate schedule: each phase warms up, then anneals along a
cosine (``schedule="cosine"``, the default).

With ``SKLEARN_CONVFEAT_WEIGHTS`` and ``SKLEARN_CONVFEAT_DATA`` set, this fine-tunes
the ImageNet base on a subset of cats and dogs; otherwise it trains random weights on
generated pictures (see the gallery's introduction). The figure's title says which
mode drew it.
"""

# %%
# Data and settings
# -----------------
# The real mode keeps FineTuner's learning rates (1e-4, then 1e-5), made for
# pretrained weights that must not be destroyed. Random weights have nothing to
# protect, so the offline mode trains the head at 1e-3 to show learning within a few
# epochs.
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
    X_train, y_train = every_kth("train", 400)
    X_val, y_val = every_kth("validation", 200)
    settings = dict(weights=WEIGHTS, image_size=150, head_epochs=10, fine_tune_epochs=5)
else:
    MODE = "random weights, generated pictures (offline build)"
    X_train, y_train = make_pictures(40, size=48)
    X_val, y_val = make_pictures(20, size=48, seed=1)
    settings = dict(
        weights=None,
        image_size=48,
        head_epochs=10,
        fine_tune_epochs=6,
        head_learning_rate=1e-3,
    )
print(f"mode: {MODE}; {len(X_train)} training and {len(X_val)} validation images")

# %%
# Fit both phases
# ---------------
# Blocks 1-4 stay frozen in both phases, so their output is computed once per image
# and once per mirror image (the frozen-prefix cache, ``cache_``; the default
# ``augment="cached"`` draws one of the two each epoch and shifts it by up to one map
# cell), and each epoch only runs block5 and the head.
from sklearn_convfeat import FineTuner

tuner = FineTuner(unfreeze=1, batch_size=20, random_state=0, **settings)
tuner.fit(X_train, y_train, validation_data=(X_val, y_val))
history = tuner.history_
print(
    f"phase 1: {tuner.fine_tune_start_} epochs, "
    f"phase 2: {len(history['phase']) - tuner.fine_tune_start_} epochs, "
    f"cache: {tuner.cache_}"
)
print(f"validation accuracy: {tuner.score(X_val, y_val):.3f}")

# %%
# The learning curves
# -------------------
# Epochs are numbered from 1 across both phases; the dashed line marks the start of
# phase 2, when block5 starts to train.
import matplotlib.pyplot as plt

epochs = np.arange(1, len(history["loss"]) + 1)
start = tuner.fine_tune_start_ + 0.5  # between the last phase-1 and first phase-2 epoch
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
axes[2].plot(epochs, history["learning_rate"], "o-", color="tab:green")
axes[2].set_yscale("log", nonpositive="mask")  # the last epoch ends at 0
axes[2].set_ylabel("learning rate (end of epoch)")
for ax, metric in zip(axes, ["loss", "accuracy", None]):
    if metric is not None:
        ax.plot(epochs, history[metric], "o-", label="training")
        ax.plot(epochs, history[f"val_{metric}"], "s-", label="validation")
        ax.set_ylabel(metric)
    ax.axvline(start, color="grey", linestyle="--")
    ax.axvspan(
        start,
        epochs[-1] + 0.5,
        color="grey",
        alpha=0.1,
        label="phase 2: block5 unfrozen",
    )
    ax.set_xlim(0.5, epochs[-1] + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
axes[1].legend(loc="lower right")
fig.suptitle(f"FineTuner history_: {MODE}")

# %%
# The training accuracy is measured with dropout and augmentation active, hence its
# lag behind the validation accuracy. The learning rate is logged at the end of each
# epoch: it rises over the first tenth of each phase's steps, then falls to 0 at its
# last step, so the last epochs of a phase make only small steps (see
# :doc:`/benchmarks` for what this recipe scores on cats vs dogs).
#
# ``history_["epoch_seconds"]`` shows what the cache buys: a phase-1 epoch trains the
# head on the base's output, computed once before the first epoch; a phase-2 epoch runs
# block5 forward and backward on the cached output of block4.
for phase in (1, 2):
    seconds = [
        s for p, s in zip(history["phase"], history["epoch_seconds"]) if p == phase
    ]
    if seconds:
        print(f"phase {phase}: median epoch {np.median(seconds):.2f} s")
