"""Class activation maps: which parts of an image made a model choose a class.

Grad-CAM (Selvaraju et al. 2017; Chollet, *Deep Learning with Python* §5.4.3),
Grad-CAM++ and Score-CAM for the classifiers of this package and for plain Keras
convnets, with an overlay, a figure and a deletion-curve faithfulness score.

How each kind of model is explained
-----------------------------------
Every model is run forward *explicitly*, layer by layer, so that the feature map of the
chosen layer and the class score can be read in one pass, whatever the nesting:

- Keras models (``FineTuner.model_``, a plain Sequential or Functional model, nested
  ones such as ``Sequential([conv_base, Flatten(), Dense(...)])``): a Sequential runs
  its layers in order; a Functional model runs its own graph of layers
  (``Function._run_through_graph``) with a hook on each layer. A nested model that holds
  the chosen layer or the output layer is entered the same way instead of being called
  whole; every other layer is called as is, with ``training=False``. No sub-model is
  built from a nested model's tensors, which is what raises "Graph disconnected" in
  other Grad-CAM code.
- ``Pipeline([ConvFeatureExtractor, (scalers), classifier])``: the cached VGG16 base
  runs from the input up to the extractor's cut, the feature map is pooled as the
  extractor pools it, the scalers are applied as the affine maps they are, then the
  classifier: a :class:`KerasMLPClassifier`'s network, or ``features @ coef_.T +
  intercept_`` for a linear model. When ``layer`` is the extractor's cut and the
  classifier is linear, the gradient needs no autodiff: it is the coefficient vector
  laid out over the feature map (see :func:`cam`).

The class score that is differentiated is the logit (the input of the final sigmoid
or softmax), see :func:`cam`.

Compiled TensorFlow functions are cached per Keras model (a weak reference: they go
with the model) and per layer, with input signatures that accept any batch: repeated
calls trace nothing new.
"""

import os
import threading
import warnings
import weakref
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted

from ._backbone import (
    VGG16_LAYERS,
    layer_index,
    pool,
    preprocess,
    resolve_layer,
)
from ._images import ImageArray, ImageFiles, check_images, decode_image, resize, to_rgb

METHODS = ("gradcam", "gradcam++", "scorecam")

_SUPPORTED_MODELS = (
    "a fitted FineTuner; a fitted Pipeline([ConvFeatureExtractor, (StandardScaler, "
    "MinMaxScaler or MaxAbsScaler steps), KerasMLPClassifier or a linear classifier "
    "with coef_ and intercept_ such as LogisticRegression]); or a built Keras "
    "Sequential or Functional model (nested models included) with one image input "
    "and one output"
)
_AFFINE_STEPS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "'passthrough'")

# Matplotlib's "jet" as piecewise-linear (position, value) knots per channel.
_JET = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)


# --------------------------------------------------------------------------- public API


def cam(
    model,
    X,
    *,
    target=None,
    layer=None,
    method="gradcam",
    max_channels=64,
    batch_size=32,
):
    """Class activation heatmaps: where in each image the evidence for a class lies.

    Grad-CAM, the recipe of Chollet, *Deep Learning with Python* §5.4.3: the gradient
    of the class score with respect to the feature map of a convolutional layer,
    averaged over space, weighs the map's channels; the ReLU of the weighted sum is the
    heatmap. Grad-CAM++ and Score-CAM are offered as alternatives.

    Parameters
    ----------
    model : FineTuner, Pipeline or keras.Model
        A fitted :class:`FineTuner`; a fitted
        ``Pipeline([ConvFeatureExtractor, ..., classifier])`` whose classifier is a
        :class:`KerasMLPClassifier` or a linear model with ``coef_`` and
        ``intercept_`` (``LogisticRegression``, ``LinearSVC``, ``SGDClassifier``...),
        with optional ``StandardScaler``, ``MinMaxScaler`` or ``MaxAbsScaler`` steps
        in between; or a built Keras Sequential or Functional model with one image
        input (batch, height, width, channels) and one output, nested models
        included. For a Keras model, ``X`` must be what the model takes: already
        preprocessed as it expects (images are only resized to its input size when
        that is fixed).
    X : array-like or str or sequence of str
        One image, (height, width, channels) or (height, width), or a batch
        (n_images, height, width[, channels]), pixel values in [0, 255]; or one image
        file path or a sequence of them.
    target : label, int, sequence or None, default=None
        The class to explain: None is the predicted class of each image; a label of
        ``classes_``; an int that is not a label is an index into ``classes_``. For a
        Keras model, the output index (with one sigmoid output: 1 is the output
        unit's class and 0 the other one). A sequence gives one target per image.
    layer : str, int or None, default=None
        The convolutional layer whose feature map is weighed. None takes the last
        convolutional layer: ``"block5_conv3"`` for a :class:`FineTuner` (the book's
        choice) and for a pipeline cut at block 5, the last convolutional layer at or
        before the cut for other pipelines. For the VGG16 models, an int N means
        ``"block{N}_pool"``. For a pipeline, the layer must be at or before the
        extractor's cut ``layer_``: the features know nothing of later layers.
    method : {"gradcam", "gradcam++", "scorecam"}, default="gradcam"
        ``"gradcam"``: channel weights are the spatial mean of the gradient.
        ``"gradcam++"``: weights are the positive gradients, each weighted as in
        Chattopadhay et al. (2018) (second- and third-order terms through the
        exponential of the score, so only the gradient is needed), which spreads the
        map over several instances of the class. ``"scorecam"`` (Wang et al. 2020)
        needs no gradient: each channel's map, upsampled and min-max normalised,
        masks the input (masked pixels become 0), and the channel is weighed by the
        class probability of the masked image. It costs one forward pass per channel
        and image, so only the ``max_channels`` channels with the largest mean
        activation in each image are used.
    max_channels : int or None, default=64
        Score-CAM only: channels used per image (None: all, e.g. 512 forward passes
        per image at block5). Ignored by the other methods.
    batch_size : int, default=32
        Images per forward pass (and masked images per pass for Score-CAM).

    Returns
    -------
    heatmaps : ndarray of shape (n_images, height, width), or list of ndarray
        Heatmaps (float32) in [0, 1], each at its image's own size (bilinear
        upsampling) so that it can be laid over the original picture, and divided by
        its maximum (an image with no positive evidence for the class gets all
        zeros). An ndarray when all images share a size, a list of (height, width)
        arrays otherwise (files of different sizes), and one (height, width) array
        when ``X`` is a single image.

    See Also
    --------
    overlay : Lay a heatmap over its image.
    plot_cam : Image, heatmap and overlay side by side.
    cam_faithfulness : Measure whether the heatmap points at what the model uses.

    Notes
    -----
    The score differentiated by Grad-CAM and Grad-CAM++ is the logit, the class
    score before the final sigmoid or softmax (which would squash the gradient of
    confident predictions to nothing): the target class's logit for a softmax output;
    for one sigmoid output ``z``, ``z`` for the positive class (``classes_[1]``) and
    ``-z`` for the other, i.e. the log-odds of the target class; ``decision_function``
    for a linear classifier, with the same sign convention for two classes. For a
    Keras model, the logit is taken when its last layer is a ``Dense`` with a sigmoid
    or softmax activation, or an ``Activation``/``Softmax`` layer; otherwise its
    output is taken as the logits. Score-CAM weighs channels by the probability.

    With a linear classifier and ``layer`` equal to the extractor's cut, the gradient
    of the score with respect to the feature map is exact and needs no backward pass:
    the coefficient vector (divided by the scalers' scales) laid out over the map for
    ``pooling="flatten"``, divided by h·w and broadcast for ``"avg"``, and routed to
    each channel's maximum for ``"max"`` (split between ties).

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
    A. Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks", WACV 2018.
    H. Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020.
    F. Chollet, *Deep Learning with Python*, Manning, 2017, §5.4.3.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor, cam
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(6, 40, 40, 3), dtype=np.uint8)
    >>> y = ["cat", "dog"] * 3
    >>> pipe = make_pipeline(
    ...     ConvFeatureExtractor(weights=None, image_size=32, random_state=0),
    ...     LogisticRegression(),
    ... ).fit(X, y)
    >>> heatmaps = cam(pipe, X[:2], target="dog")
    >>> heatmaps.shape, heatmaps.dtype
    ((2, 40, 40), dtype('float32'))
    >>> bool(heatmaps.min() >= 0 and heatmaps.max() <= 1)
    True
    >>> cam(pipe, X[0], method="gradcam++").shape  # one image, one heatmap
    (40, 40)
    """
    method = _check_method(method)
    max_channels = _check_max_channels(max_channels)
    batch_size = _check_positive_int(batch_size, "batch_size")
    explainer = _make_explainer(model, layer)
    images, single = _check_X(X, explainer)
    targets = _resolve_targets(explainer, target, len(images))
    heatmaps, _, _ = _explain(explainer, images, targets, method, max_channels, batch_size)
    return _package(heatmaps, single)


def overlay(image, heatmap, *, alpha=0.4, colormap="jet"):
    """Lay a heatmap over an image, coloured by a colormap.

    Parameters
    ----------
    image : array-like of shape (height, width[, channels]) or str
        The picture: uint8 or float pixel values in [0, 255], grey, RGB or RGBA
        (alpha is dropped), or an image file path.
    heatmap : array-like of shape (h, w)
        Values in [0, 1] (outside values are clipped), such as one heatmap of
        :func:`cam`; resized (bilinear) to the image's size when it differs.
    alpha : float, default=0.4
        Opacity of the coloured heatmap, in [0, 1]: each pixel is
        ``(1 - alpha) * image + alpha * colour``.
    colormap : str or callable, default="jet"
        ``"jet"`` is built in (matplotlib's jet, computed with numpy). Any other
        matplotlib colormap name (``"viridis"``, ``"inferno"``...) or a matplotlib
        ``Colormap`` needs matplotlib.

    Returns
    -------
    blended : ndarray of shape (height, width, 3), dtype uint8
        An RGB image, ready for ``PIL.Image.fromarray(blended).save("cam.png")``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convfeat import overlay
    >>> image = np.full((40, 60, 3), 128, dtype=np.uint8)
    >>> heatmap = np.zeros((5, 5)); heatmap[0, 0] = 1.0
    >>> blended = overlay(image, heatmap, alpha=0.5)
    >>> blended.shape, blended.dtype
    ((40, 60, 3), dtype('uint8'))
    >>> blended[0, 0].tolist(), blended[-1, -1].tolist()  # dark red on hot, blue on cold
    ([128, 64, 64], [64, 64, 128])
    """
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
        raise ValueError(
            f"`alpha` must be a number in [0, 1], the opacity of the heatmap. Got "
            f"{alpha!r}; the usual value is 0.4."
        )
    pixels = _as_picture(image)
    heat = _check_heatmap(heatmap, "heatmap")
    if heat.shape != pixels.shape[:2]:
        heat = _resize_map(heat, pixels.shape[:2])
    colours = _colorize(np.clip(heat, 0.0, 1.0), colormap) * 255.0
    blended = (1.0 - alpha) * pixels + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def plot_cam(
    model,
    X,
    heatmaps=None,
    *,
    target=None,
    layer=None,
    method="gradcam",
    max_channels=64,
    alpha=0.4,
    colormap="jet",
    path=None,
):
    """A matplotlib figure: each image, its heatmap and the overlay, side by side.

    Needs matplotlib (``pip install matplotlib``, or the ``plot`` extra).

    Parameters
    ----------
    model, X, target, layer, method, max_channels
        As for :func:`cam`.
    heatmaps : ndarray or list of ndarray, default=None
        Heatmaps already computed by :func:`cam` for ``X`` and ``target``; None
        computes them.
    alpha, colormap
        As for :func:`overlay`.
    path : str or os.PathLike, default=None
        Also save the figure there (format from the extension, e.g. ``.png``).

    Returns
    -------
    figure : matplotlib.figure.Figure
        One row per image; the title of each row names the explained class and its
        predicted probability. Save it with ``figure.savefig("cam.png")``. The figure
        is not registered with pyplot: it is freed like any object.

    Examples
    --------
    >>> import numpy as np
    >>> import keras
    >>> from sklearn_convfeat import plot_cam
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2, activation="softmax"),
    ... ])
    >>> image = np.random.default_rng(0).uniform(0, 255, size=(16, 16, 3))
    >>> figure = plot_cam(model, image, target=1)  # doctest: +SKIP
    >>> figure.savefig("cam.png")  # doctest: +SKIP
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plot_cam needs matplotlib: pip install matplotlib (or the package's "
            "'plot' extra). cam() and overlay() work without it."
        ) from exc
    method = _check_method(method)
    max_channels = _check_max_channels(max_channels)
    explainer = _make_explainer(model, layer)
    images, single = _check_X(X, explainer)
    targets = _resolve_targets(explainer, target, len(images))
    if heatmaps is None:
        maps, targets, proba = _explain(
            explainer, images, targets, method, max_channels, 32
        )
        title = method
    else:
        maps = _check_heatmaps(heatmaps, images, single)
        targets, proba = _predict(explainer, images, targets, 32)
        title = "heatmap"
    n_images = len(images)
    figure = Figure(figsize=(9.0, 3.2 * n_images), layout="constrained")
    axes = figure.subplots(n_images, 3, squeeze=False)
    for i in range(n_images):
        picture = _displayable(_original(images, i))
        label = explainer.classes[targets[i]]
        axes[i, 0].imshow(picture)
        axes[i, 0].set_title(f"{label!s} (p={proba[i, targets[i]]:.2f})")
        axes[i, 1].imshow(maps[i], cmap=colormap if isinstance(colormap, str) else None,
                          vmin=0.0, vmax=1.0)
        axes[i, 1].set_title(title)
        axes[i, 2].imshow(overlay(picture, maps[i], alpha=alpha, colormap=colormap))
        axes[i, 2].set_title("overlay")
        for ax in axes[i]:
            ax.set_axis_off()
    if path is not None:
        figure.savefig(os.fspath(path))
    return figure


def cam_faithfulness(
    model,
    X,
    heatmaps,
    *,
    target=None,
    steps=20,
    baseline="mean",
    random_state=None,
    batch_size=32,
):
    """Deletion-curve faithfulness of heatmaps, against random saliency maps.

    The deletion metric (Petsiuk et al. 2018): blank the image's pixels in order of
    decreasing heatmap value, a fraction ``1/steps`` more at each step, and follow
    the probability of the explained class. A heatmap that points at what the model
    uses makes the probability fall fast, so the area under the curve (AUC) is
    small: **lower is better**. The same is measured with a random order of the
    pixels (a random saliency map) as the baseline a heatmap must beat.

    Parameters
    ----------
    model, X, target
        As for :func:`cam`; ``target`` must be the one the heatmaps explain (None,
        the predicted class, is the predicted class on the intact image).
    heatmaps : ndarray or list of ndarray
        One heatmap per image of ``X``, as :func:`cam` returns them (each is resized
        to the model's input size).
    steps : int, default=20
        Deletion steps: the curve has ``steps + 1`` points, from the intact image to
        a fully blanked one. Costs ``2 * (steps + 1)`` forward passes per image.
    baseline : {"mean", "zero"}, default="mean"
        What a blanked pixel becomes: the image's mean colour (the input then holds
        no information there, without the strong edges of black holes), or 0 (black
        for images in [0, 255]; for a Keras model, 0 of its preprocessed input).
    random_state : int, RandomState instance or None, default=None
        Draws the random orders and breaks ties between equal heatmap values.
    batch_size : int, default=32
        Images per forward pass.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``auc`` and ``random_auc``, ndarrays of shape (n_images,) in [0, 1];
        ``mean_auc`` and ``mean_random_auc``, their means; ``fractions`` (steps + 1,),
        the blanked share of pixels at each step; ``curves`` and ``random_curves``
        (n_images, steps + 1), the probabilities along the way; ``targets``, the
        class index explained for each image.

    References
    ----------
    V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized Input Sampling for Explanation
    of Black-box Models", BMVC 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor, cam, cam_faithfulness
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     ConvFeatureExtractor(weights=None, image_size=32, random_state=0),
    ...     LogisticRegression(),
    ... ).fit(X, [0, 1] * 3)
    >>> scores = cam_faithfulness(pipe, X[:2], cam(pipe, X[:2]), steps=4,
    ...                           random_state=0)
    >>> scores.auc.shape, scores.curves.shape
    ((2,), (2, 5))
    >>> bool(0 <= scores.mean_auc <= 1 and 0 <= scores.mean_random_auc <= 1)
    True
    """
    steps = _check_positive_int(steps, "steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if baseline not in ("mean", "zero"):
        raise ValueError(
            f"`baseline` must be 'mean' (the image's mean colour) or 'zero'. Got "
            f"{baseline!r}."
        )
    rng = check_random_state(random_state)
    explainer = _make_explainer(model, None, need_layer=False)
    images, single = _check_X(X, explainer)
    maps = _check_heatmaps(heatmaps, images, single)
    targets = _resolve_targets(explainer, target, len(images))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    n_images = len(images)
    curves = np.empty((n_images, steps + 1))
    random_curves = np.empty((n_images, steps + 1))
    used = np.empty(n_images, dtype=int)
    for i, size, x in _inputs_one_by_one(explainer, images):
        heat = _resize_map(maps[i], size).ravel()
        n_pixels = heat.size
        # Most salient first; equal values (maps upsampled from a few cells) in random
        # order, so that ties do not favour the top-left corner.
        salient = np.lexsort((rng.random_sample(n_pixels), -heat))
        random = rng.permutation(n_pixels)
        blank = x.mean(axis=(1, 2), keepdims=True) if baseline == "mean" else 0.0
        probas = []
        for order in (salient, random):
            rank = np.empty(n_pixels, dtype=np.int64)
            rank[order] = np.arange(n_pixels)
            counts = np.rint(fractions * n_pixels).astype(np.int64)
            masks = (rank[np.newaxis, :] < counts[:, np.newaxis]).reshape(
                steps + 1, *size, 1
            )
            probas.append(_proba_in_chunks(explainer, np.where(masks, blank, x), batch_size))
        target_index = targets[i]
        if target_index < 0:
            target_index = int(np.argmax(probas[0][0]))
        used[i] = target_index
        curves[i] = probas[0][:, target_index]
        random_curves[i] = probas[1][:, target_index]
    auc = np.trapezoid(curves, fractions, axis=1)
    random_auc = np.trapezoid(random_curves, fractions, axis=1)
    return Bunch(
        auc=auc,
        random_auc=random_auc,
        mean_auc=float(auc.mean()),
        mean_random_auc=float(random_auc.mean()),
        fractions=fractions,
        curves=curves,
        random_curves=random_curves,
        targets=used,
    )


# ------------------------------------------------------------------------ the methods


def _explain(explainer, images, targets, method, max_channels, batch_size):
    """(heatmaps at each image's size, class index explained, probabilities)."""
    n_images = len(images)
    heatmaps = [None] * n_images
    used = np.empty(n_images, dtype=int)
    proba = np.empty((n_images, len(explainer.classes)))
    for rows, size in _batches(explainer, images, batch_size):
        x = explainer.inputs(images, rows, size)
        if method == "scorecam":
            maps, logits, filled = explainer.maps(x, targets[rows])
            coarse = _score_cam(explainer, x, maps, filled, max_channels, batch_size)
        else:
            maps, grads, logits, filled = explainer.gradients(x, targets[rows])
            coarse = _grad_cam(maps, grads, method)
        used[rows] = filled
        proba[rows] = explainer.to_proba(logits)
        for row, heat in zip(rows, coarse):
            heatmaps[row] = _normalise(_resize_map(heat, images.image_shape(row)))
    return heatmaps, used, proba


def _grad_cam(maps, grads, method):
    """ReLU(Σ_k w_k A_k) with Grad-CAM or Grad-CAM++ channel weights w_k."""
    maps = np.asarray(maps, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    if method == "gradcam":
        weights = grads.mean(axis=(1, 2))
    else:
        # Grad-CAM++ with exp(score): its 2nd and 3rd derivatives are exp(score)·g² and
        # exp(score)·g³ for a piecewise-linear network, and exp(score) cancels out.
        g2 = grads**2
        denominator = 2.0 * g2 + maps.sum(axis=(1, 2), keepdims=True) * grads**3
        alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=denominator != 0)
        weights = (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", maps, weights), 0.0)


def _score_cam(explainer, x, maps, targets, max_channels, batch_size):
    maps = np.asarray(maps, dtype=np.float32)
    size = x.shape[1:3]
    coarse = np.zeros(maps.shape[:3])
    for i in range(len(x)):
        activation = maps[i]
        channels = np.argsort(-activation.mean(axis=(0, 1)), kind="stable")
        if max_channels is not None:
            channels = channels[:max_channels]
        upsampled = resize(activation[np.newaxis][..., channels], size)[0]
        low = upsampled.min(axis=(0, 1))
        high = upsampled.max(axis=(0, 1))
        keep = high > low  # a constant map masks nothing: it carries no location
        if not keep.any():
            continue
        channels = channels[keep]
        masks = (upsampled[..., keep] - low[keep]) / (high[keep] - low[keep])
        masked = x[i][np.newaxis] * np.moveaxis(masks, -1, 0)[..., np.newaxis]
        scores = _proba_in_chunks(explainer, masked, batch_size)[:, targets[i]]
        coarse[i] = np.maximum(activation[..., channels] @ scores, 0.0)
    return coarse


def _proba_in_chunks(explainer, x, batch_size):
    return np.concatenate(
        [
            explainer.to_proba(explainer.logits(x[start : start + batch_size]))
            for start in range(0, len(x), batch_size)
        ]
    )


def _predict(explainer, images, targets, batch_size):
    """(class index explained, probabilities) without heatmaps."""
    used = np.empty(len(images), dtype=int)
    proba = np.empty((len(images), len(explainer.classes)))
    for rows, size in _batches(explainer, images, batch_size):
        proba[rows] = explainer.to_proba(explainer.logits(explainer.inputs(images, rows, size)))
        used[rows] = np.where(targets[rows] < 0, proba[rows].argmax(axis=1), targets[rows])
    return used, proba


def _fill_targets(targets, logits, binary):
    """Replace the -1 (predicted class) entries of ``targets``."""
    logits = np.asarray(logits)
    predicted = (logits[:, 0] > 0).astype(int) if binary else logits.argmax(axis=1)
    return np.where(np.asarray(targets) < 0, predicted, targets).astype(int)


def _to_proba(logits, activation):
    """Probabilities of each class from the logits, as the model's own output layer."""
    from scipy.special import expit, softmax

    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        positive = expit(logits[:, 0])
        return np.column_stack([1.0 - positive, positive])
    if activation == "sigmoid":  # independent sigmoids (multi-label): as the model says
        return expit(logits)
    return softmax(logits, axis=1)


def _normalise(heat):
    peak = heat.max()
    if not peak > 0:
        return np.zeros(heat.shape, dtype=np.float32)
    return np.clip(heat / peak, 0.0, 1.0).astype(np.float32)


def _resize_map(heat, size):
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == tuple(size):
        return heat
    return resize(heat[np.newaxis, :, :, np.newaxis], tuple(size))[0, :, :, 0]


# ------------------------------------------------------------------ compiled functions

_COMPILED = weakref.WeakKeyDictionary()  # Keras model → {key: tf.function}
_COMPILED_LOCK = threading.Lock()


def _compiled(owner, key, build):
    """The tf.function ``key`` of ``owner`` (a Keras model), built once.

    The functions refer to their models through weak references only, so an entry
    goes away with its model.
    """
    with _COMPILED_LOCK:
        functions = _COMPILED.get(owner)
        if functions is None:
            functions = _COMPILED[owner] = {}
        function = functions.get(key)
        if function is None:
            function = functions[key] = build()
    return function


def _compile_gradients(run, image_spec, param_specs, binary):
    """tf.function (images, targets, *params) → (maps, d score/d maps, logits, targets).

    ``run(images, params, tape)`` returns (maps, logits) and watches maps on ``tape``.
    A target of -1 is the predicted class.
    """
    import tensorflow as tf

    def gradients(images, targets, *params):
        with tf.GradientTape() as tape:
            maps, logits = run(images, params, tape)
            scores, targets = _class_scores(logits, targets, binary)
            # Images do not interact in inference, so the gradient of the sum is each
            # image's own gradient.
            total = tf.reduce_sum(scores)
        return maps, tape.gradient(total, maps), logits, targets

    return tf.function(
        gradients,
        input_signature=[image_spec, tf.TensorSpec((None,), tf.int32), *param_specs],
        reduce_retracing=True,
    )


def _compile_forward(run, image_spec, param_specs, with_maps):
    import tensorflow as tf

    def forward(images, *params):
        maps, logits = run(images, params, None)
        return (maps, logits) if with_maps else logits

    return tf.function(
        forward, input_signature=[image_spec, *param_specs], reduce_retracing=True
    )


def _class_scores(logits, targets, binary):
    import tensorflow as tf

    if binary:
        logit = logits[:, 0]
        targets = tf.where(targets < 0, tf.cast(logit > 0, tf.int32), targets)
        return tf.where(targets == 1, logit, -logit), targets
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    targets = tf.where(targets < 0, predicted, targets)
    return tf.gather(logits, targets, axis=1, batch_dims=1), targets


# ------------------------------------------------------------- running Keras models


class _Trace:
    """What one explicit forward pass records: the feature map and the logits."""

    def __init__(self, target_layer, final_layer, final_kind, containers, tape):
        self.target_layer = target_layer
        self.final_layer = final_layer
        self.final_kind = final_kind
        self.containers = containers
        self.tape = tape
        self.maps = None
        self.logits = None


def _make_trace(model, layer_name, tape):
    target, target_path = None, []
    if layer_name is not None:
        target, target_path = _find_layer(model, layer_name)
    final_path, final, kind = _final_layer(model)
    return _Trace(target, final, kind, target_path + final_path, tape)


def _run_model(model, x, trace):
    """``model(x)``, layer by layer, recording what ``trace`` asks for."""
    import keras

    if isinstance(model, keras.Sequential):
        for layer in _sublayers(model):
            x = _run_layer(layer, trace, x)
        return x
    outputs = model._run_through_graph(
        [x], operation_fn=lambda layer: lambda *args, **kwargs: _run_layer(
            layer, trace, *args, **kwargs
        )
    )
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    return outputs


def _logits(model, x, trace):
    """The class scores of ``model(x)``: the logits where the output layer's sigmoid or
    softmax can be undone, else the output. ``trace`` None records nothing else."""
    trace = trace or _make_trace(model, None, None)
    outputs = _run_model(model, x, trace)
    return trace.logits if trace.logits is not None else outputs


def _run_layer(layer, trace, *args, **kwargs):
    import keras

    if layer is trace.final_layer and trace.final_kind == "dense":
        logits = keras.ops.matmul(args[0], layer.kernel)
        if layer.use_bias:
            logits = logits + layer.bias
        trace.logits = logits
        outputs = layer.activation(logits)
    elif layer is trace.final_layer:  # an Activation or Softmax layer
        trace.logits = args[0]
        outputs = layer(*args, **kwargs)
    elif any(layer is container for container in trace.containers):
        outputs = _run_model(layer, args[0], trace)
    else:
        outputs = layer(*args, **{**kwargs, "training": False})
    if layer is trace.target_layer:
        if trace.tape is not None:
            trace.tape.watch(outputs)
        trace.maps = outputs
    return outputs


def _sublayers(model):
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _is_graph_model(model):
    """A Sequential or Functional model: one whose layers can be run one by one."""
    import keras

    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )


def _walk(model):
    """Every layer of ``model``, nested models' layers included, in forward order."""
    for layer in _sublayers(model):
        yield layer
        if _is_graph_model(layer):
            yield from _walk(layer)


def _find_layer(model, name):
    """(layer, nested models that lead to it) for the layer called ``name``, or None."""
    layers = _sublayers(model)
    for layer in layers:
        if layer.name == name:
            return layer, []
    for layer in layers:
        if _is_graph_model(layer):
            found = _find_layer(layer, name)
            if found is not None:
                return found[0], [layer, *found[1]]
    return None


def _final_layer(model):
    """(nested models that lead to it, the output layer, "dense"/"activation"/None).

    The kind says how the logits are read: the pre-activation of a Dense layer with a
    sigmoid or softmax activation, or the input of a final sigmoid/softmax layer.
    """
    import keras

    if isinstance(model, keras.Sequential):
        layer = _sublayers(model)[-1]
    else:
        history = getattr(model.outputs[0], "_keras_history", None)
        layer = history[0] if history is not None else _sublayers(model)[-1]
    if _is_graph_model(layer):
        path, final, kind = _final_layer(layer)
        return [layer, *path], final, kind
    return [], layer, _activation_kind(layer)[0]


def _activation_kind(layer):
    """("dense" | "activation" | None, "sigmoid" | "softmax" | None)."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "activation", "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if name not in ("sigmoid", "softmax"):
        return None, None
    if isinstance(layer, keras.layers.Dense) and getattr(layer, "quantization_mode", None) is None:
        return "dense", name
    if isinstance(layer, keras.layers.Activation):
        return "activation", name
    return None, None


def _is_conv(layer):
    import keras

    kinds = (
        keras.layers.Conv2D,
        keras.layers.SeparableConv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.Conv2DTranspose,
    )
    return isinstance(layer, kinds)


def _output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # shared layer, or never called
        return None


# -------------------------------------------------------------------------- explainers


def _make_explainer(model, layer, need_layer=True):
    from sklearn.pipeline import Pipeline

    from ._finetune import FineTuner

    if isinstance(model, FineTuner):
        check_is_fitted(model)
        if layer is not None and not isinstance(layer, str):
            layer = resolve_layer(layer)
        return _KerasExplainer(
            model.model_, layer, classes=model.classes_, size=model.image_size_,
            plain=False, need_layer=need_layer,
        )
    if isinstance(model, Pipeline):
        return _PipelineExplainer(model, layer, need_layer=need_layer)
    import keras

    if isinstance(model, keras.Model) and _is_graph_model(model):
        return _KerasExplainer(model, layer, plain=True, need_layer=need_layer)
    if isinstance(model, keras.Model):
        raise TypeError(
            f"`model` is a subclassed Keras model ({type(model).__name__}) whose call() "
            "cannot be run layer by layer. Build it with the Sequential or Functional "
            f"API. Supported models: {_SUPPORTED_MODELS}."
        )
    raise TypeError(
        f"`model` must be {_SUPPORTED_MODELS}. Got a {type(model).__name__}."
    )


class _KerasExplainer:
    """A Keras model, run layer by layer (FineTuner.model_ or a user's model)."""

    def __init__(self, model, layer, *, plain, classes=None, size=None, need_layer=True):
        import tensorflow as tf

        # plain: a user's model, whose input is taken as preprocessed as it expects.
        self.plain = plain
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError) as exc:
            raise ValueError(
                "`model` is a Keras model that has not been built, so its layers have "
                "no shapes. Build it first: start it with keras.Input(shape), or call "
                "model.build((None, height, width, channels))."
            ) from exc
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"`model` must have one input and one output; it has {len(inputs)} "
                f"inputs and {len(outputs)} outputs. Build a model with the output "
                "to explain."
            )
        input_shape = tuple(inputs[0].shape)
        if len(input_shape) != 4:
            raise ValueError(
                "`model` must take a batch of images (batch, height, width, channels); "
                f"its input has shape {input_shape}."
            )
        self.model = model
        self.size = tuple(size) if size is not None else (
            None if None in input_shape[1:3] else tuple(input_shape[1:3])
        )
        self.channels = input_shape[3]
        self._image_spec = tf.TensorSpec((None, *input_shape[1:]), tf.float32)
        self.layer = None
        if layer is not None or need_layer:
            self.layer = self._resolve_layer(layer)
        _, final, _ = _final_layer(model)
        self.activation = _activation_kind(final)[1]
        n_outputs = outputs[0].shape[-1]
        self.binary = n_outputs == 1
        if classes is None:
            classes = np.arange(2 if self.binary else n_outputs)
        self.classes = np.asarray(classes)

    def _resolve_layer(self, layer):
        convs = [candidate for candidate in _walk(self.model) if _is_conv(candidate)]
        if layer is None:
            if not convs:
                raise ValueError(
                    "`layer` is None, which takes the model's last convolutional "
                    "layer, but the model has none. Pass layer= the name of a layer "
                    "with a 4-D (batch, height, width, channels) output."
                )
            return convs[-1].name
        suggestion = (
            f" Its convolutional layers are {[conv.name for conv in convs]}." if convs
            else ""
        )
        found = _find_layer(self.model, layer) if isinstance(layer, str) else None
        if found is None:
            raise ValueError(
                f"`layer` must be the name of a layer of the model. Got {layer!r}."
                f"{suggestion}"
            )
        shape = _output_shape(found[0])
        if shape is not None and len(shape) != 4:
            raise ValueError(
                f"`layer` must have a 4-D (batch, height, width, channels) output, a "
                f"feature map. Got layer={layer!r}, whose output has shape {shape}."
                f"{suggestion}"
            )
        return layer

    def inputs(self, images, rows, size):
        """The model's input for ``rows``: float32 at ``size``."""
        if isinstance(images, ImageArray):
            x = np.asarray(images.array[rows], dtype=np.float32)
            if x.ndim == 3:
                x = x[..., np.newaxis]
            if x.shape[-1] != self.channels and self.channels == 3:
                x = to_rgb(x)
        else:
            x = images.take(rows, size)
        if self.channels is not None and x.shape[-1] != self.channels:
            raise ValueError(
                f"`model` takes images with {self.channels} channels; X has "
                f"{x.shape[-1]}. Convert X to what the model takes."
            )
        return resize(x, size)

    def _run(self, layer):
        model_ref = weakref.ref(self.model)

        def run(images, params, tape):
            model = model_ref()
            trace = _make_trace(model, layer, tape)
            logits = _logits(model, images, trace)
            if layer is not None and trace.maps is None:
                raise ValueError(
                    f"`layer` {layer!r} is not on the path from the model's input to "
                    "its output. Pick a layer the model's output depends on."
                )
            if layer is not None and len(trace.maps.shape) != 4:
                raise ValueError(
                    f"`layer` must have a 4-D (batch, height, width, channels) output; "
                    f"{layer!r} outputs shape {tuple(trace.maps.shape)}."
                )
            return trace.maps, logits

        return run

    def gradients(self, x, targets):
        function = _compiled(self.model, ("gradients", self.layer), lambda: _compile_gradients(
            self._run(self.layer), self._image_spec, [], self.binary
        ))
        maps, grads, logits, targets = function(x, np.asarray(targets, dtype=np.int32))
        return maps.numpy(), grads.numpy(), logits.numpy(), targets.numpy()

    def maps(self, x, targets):
        function = _compiled(self.model, ("maps", self.layer), lambda: _compile_forward(
            self._run(self.layer), self._image_spec, [], True
        ))
        maps, logits = function(x)
        logits = logits.numpy()
        return maps.numpy(), logits, _fill_targets(targets, logits, self.binary)

    def logits(self, x):
        function = _compiled(self.model, ("logits",), lambda: _compile_forward(
            self._run(None), self._image_spec, [], False
        ))
        return function(x).numpy()

    def to_proba(self, logits):
        return _to_proba(logits, self.activation)


class _PipelineExplainer:
    """Pipeline([ConvFeatureExtractor, (affine scalers), KerasMLP or linear classifier])."""

    def __init__(self, pipeline, layer, need_layer=True):
        from ._extractor import ConvFeatureExtractor, feature_runner, tensorflow_runner
        from ._mlp import KerasMLPClassifier

        steps = [step for _, step in pipeline.steps]
        extractor, head = steps[0], steps[-1]
        if not isinstance(extractor, ConvFeatureExtractor) or len(steps) < 2:
            raise TypeError(
                f"`model` is a Pipeline whose first step is a "
                f"{type(extractor).__name__}, not a ConvFeatureExtractor followed by a "
                f"classifier. Supported models: {_SUPPORTED_MODELS}."
            )
        for step in steps:
            if step is not None and step != "passthrough":
                check_is_fitted(step)
        self.extractor = extractor
        self.size = tuple(extractor.image_size_)
        self.cut = extractor.layer_
        self.pooling = extractor.pooling
        self.preprocessing = extractor.preprocessing
        runner = feature_runner(extractor)  # also checks the weights' hash
        self._pooled_forward = lambda x: runner.features(x, extractor.pooling)
        self._tensorflow = tensorflow_runner(extractor)
        self.scale, self.shift = _affine(steps[1:-1], extractor.n_features_out_)
        if isinstance(head, KerasMLPClassifier):
            self.kind = "mlp"
            self.head_model = head.model_
            self.binary = self.head_model.outputs[0].shape[-1] == 1
            _, final, _ = _final_layer(self.head_model)
            self.activation = _activation_kind(final)[1]
        elif hasattr(head, "coef_") and hasattr(head, "intercept_") and hasattr(head, "classes_"):
            self.kind = "linear"
            coef = np.atleast_2d(np.asarray(head.coef_, dtype=np.float64))
            intercept = np.atleast_1d(np.asarray(head.intercept_, dtype=np.float64))
            # The scalers fold into the linear model: w·(f·a + c) + b.
            self.coef = coef * self.scale
            self.intercept = intercept + coef @ self.shift
            self.binary = coef.shape[0] == 1
            self.activation = None
        else:
            raise TypeError(
                f"`model` is a Pipeline ending in a {type(head).__name__}, which is "
                "neither a KerasMLPClassifier nor a linear classifier with coef_, "
                f"intercept_ and classes_. Supported models: {_SUPPORTED_MODELS}."
            )
        self.classes = np.asarray(head.classes_)
        self.plain = False
        self.layer = None
        if layer is not None or need_layer:
            self.layer = self._resolve_layer(layer)
        # The exact gradient needs no backward pass: see cam's Notes.
        self.analytic = self.kind == "linear" and self.layer == self.cut

    def _resolve_layer(self, layer):
        last_conv = [name for name in VGG16_LAYERS[: layer_index(self.cut) + 1]
                     if "conv" in name][-1]
        if layer is None:
            return last_conv
        name = resolve_layer(layer)
        if not isinstance(name, str) or name not in VGG16_LAYERS:
            raise ValueError(
                f"`layer` must be a VGG16 layer name ('block1_conv1' ... 'block5_pool') "
                f"or a block number 1-5. Got {layer!r}; the last convolutional layer "
                f"of this pipeline is {last_conv!r}."
            )
        if layer_index(name) > layer_index(self.cut):
            raise ValueError(
                f"`layer` must be at or before the extractor's cut, layer_="
                f"{self.cut!r}: the features know nothing of later layers. Got "
                f"layer={name!r}; use e.g. {last_conv!r}, the last convolutional layer "
                "before the cut."
            )
        return name

    def inputs(self, images, rows, size):
        return images.take(rows, size)

    # Linear classifier at the cut: numpy only, exact. ---------------------------------

    def _maps_at_cut(self, x):
        return self._tensorflow.maps(x)

    def _pool(self, maps):
        if self.pooling == "avg":
            return maps.mean(axis=(1, 2))
        if self.pooling == "max":
            return maps.max(axis=(1, 2))
        return maps.reshape(len(maps), -1)

    def _exact_gradients(self, maps, targets):
        """d score / d maps: the coefficients laid out over the feature map."""
        n_images, height, width, channels = maps.shape
        if self.binary:  # the score of class 0 is -decision_function
            rows = self.coef[np.zeros(n_images, dtype=int)]
            rows = rows * np.where(targets == 1, 1.0, -1.0)[:, np.newaxis]
        else:
            rows = self.coef[targets]
        if self.pooling == "flatten":
            return rows.reshape(n_images, height, width, channels)
        if self.pooling == "avg":
            return np.broadcast_to(
                rows[:, np.newaxis, np.newaxis, :] / (height * width), maps.shape
            ).copy()
        # max: each channel's value comes from its maximum; ties share it, as in TF.
        at_max = maps == maps.max(axis=(1, 2), keepdims=True)
        share = at_max / at_max.sum(axis=(1, 2), keepdims=True)
        return share * rows[:, np.newaxis, np.newaxis, :]

    # TensorFlow path: any layer at or before the cut, any classifier. -----------------

    def _run(self, layer):
        base_ref = weakref.ref(self._tensorflow.model)
        head_ref = weakref.ref(self.head_model) if self.kind == "mlp" else None
        cut, preprocessing, pooling, kind = self.cut, self.preprocessing, self.pooling, self.kind

        def run(images, params, tape):
            import tensorflow as tf

            base = base_ref()
            x = preprocess(images, preprocessing)
            maps = None
            for name in VGG16_LAYERS[: layer_index(cut) + 1]:
                x = base.get_layer(name)(x, training=False)
                if name == layer:
                    if tape is not None:
                        tape.watch(x)
                    maps = x
            features = pool(x, pooling)
            if kind == "linear":
                coef, intercept = params
                return maps, tf.matmul(features, coef, transpose_b=True) + intercept
            scale, shift = params
            return maps, _logits(head_ref(), features * scale + shift, None)

        return run

    def _owner_and_key(self, what, layer):
        base = self._tensorflow.model
        key = (what, layer, self.cut, self.preprocessing, self.pooling, self.binary)
        if self.kind == "linear":
            return base, ("linear", *key)
        return self.head_model, ("mlp", weakref.ref(base), *key)

    def _params(self):
        if self.kind == "linear":
            return (self.coef.astype(np.float32), self.intercept.astype(np.float32))
        return (self.scale.astype(np.float32), self.shift.astype(np.float32))

    def _specs(self):
        import tensorflow as tf

        image = tf.TensorSpec((None, None, None, 3), tf.float32)
        if self.kind == "linear":
            params = [tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((None,), tf.float32)]
        else:
            params = [tf.TensorSpec((None,), tf.float32)] * 2
        return image, params

    def gradients(self, x, targets):
        if self.analytic:
            maps = self._maps_at_cut(x)
            logits = self._linear(self._pool(maps))
            targets = _fill_targets(targets, logits, self.binary)
            return maps, self._exact_gradients(maps, targets), logits, targets
        owner, key = self._owner_and_key("gradients", self.layer)
        function = _compiled(owner, key, lambda: _compile_gradients(
            self._run(self.layer), *self._specs(), self.binary
        ))
        maps, grads, logits, targets = function(
            x, np.asarray(targets, dtype=np.int32), *self._params()
        )
        return maps.numpy(), grads.numpy(), logits.numpy(), targets.numpy()

    def maps(self, x, targets):
        if self.analytic:
            maps = self._maps_at_cut(x)
            logits = self._linear(self._pool(maps))
        else:
            owner, key = self._owner_and_key("maps", self.layer)
            function = _compiled(owner, key, lambda: _compile_forward(
                self._run(self.layer), *self._specs(), True
            ))
            maps, logits = function(x, *self._params())
            maps, logits = maps.numpy(), logits.numpy()
        return maps, logits, _fill_targets(targets, logits, self.binary)

    def logits(self, x):
        # The extractor's own compiled forward: the features transform() gives.
        features = self._pooled_forward(x)
        if self.kind == "linear":
            return self._linear(features)
        owner, key = self._owner_and_key("head", None)
        function = _compiled(owner, key, lambda: _compile_head(self.head_model))
        scaled = features.astype(np.float64) * self.scale + self.shift
        return function(scaled.astype(np.float32)).numpy()

    def _linear(self, features):
        """Decision function on unscaled features (the scalers are folded in)."""
        return np.asarray(features, dtype=np.float64) @ self.coef.T + self.intercept

    def to_proba(self, logits):
        return _to_proba(logits, self.activation)


def _compile_head(head_model):
    """tf.function features → logits of a KerasMLPClassifier's network."""
    import tensorflow as tf

    head_ref = weakref.ref(head_model)

    def logits(features):
        return _logits(head_ref(), features, None)

    return tf.function(
        logits, input_signature=[tf.TensorSpec((None, None), tf.float32)],
        reduce_retracing=True,
    )


def _affine(steps, n_features):
    """(scale, shift) with steps(f) == f * scale + shift for the scalers in ``steps``."""
    scale = np.ones(n_features)
    shift = np.zeros(n_features)
    for step in steps:
        name = type(step).__name__
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if name == "StandardScaler":
            a = 1.0 / step.scale_ if step.with_std else np.ones(n_features)
            b = -step.mean_ * a if step.with_mean else np.zeros(n_features)
        elif name == "MinMaxScaler" and not getattr(step, "clip", False):
            a, b = step.scale_, step.min_
        elif name == "MaxAbsScaler":
            a, b = 1.0 / step.scale_, np.zeros(n_features)
        else:
            raise TypeError(
                f"`model` is a Pipeline with a {name} step between the extractor and "
                "the classifier; only affine steps can be explained through: "
                f"{', '.join(_AFFINE_STEPS)} (MinMaxScaler without clip). Remove the "
                "step or fold it into the classifier."
            )
        scale, shift = scale * a, shift * a + b
    return scale, shift


# -------------------------------------------------------------------------- the inputs


def _check_X(X, explainer):
    """(ImageArray or ImageFiles, whether X was one image)."""
    single = False
    if isinstance(X, (str, os.PathLike)):
        X, single = [X], True
    elif hasattr(X, "ndim") and hasattr(X, "shape") and not hasattr(X, "iloc"):
        X = np.asarray(X)
        if X.ndim == 2 or (X.ndim == 3 and X.shape[-1] in (1, 3, 4)):
            X, single = X[np.newaxis], True
    with warnings.catch_warnings():
        if explainer.plain:
            # A Keras model's input is preprocessed as it expects, [0, 1] included.
            warnings.filterwarnings("ignore", message="X looks scaled to")
        images = check_images(X)
    if isinstance(images, ImageFiles):
        images.check_exist()
    return images, single


def _batches(explainer, images, batch_size):
    """(rows, model input size) in batches; rows of one batch share the input size."""
    for start in range(0, len(images), batch_size):
        rows = np.arange(start, min(start + batch_size, len(images)))
        if explainer.size is not None:
            yield rows, explainer.size
            continue
        by_size = {}
        for row in rows:  # a model that takes any size runs each image at its own
            by_size.setdefault(tuple(images.image_shape(row)), []).append(row)
        for size, group in by_size.items():
            yield np.asarray(group), size


def _inputs_one_by_one(explainer, images):
    for rows, size in _batches(explainer, images, 1):
        yield rows[0], size, explainer.inputs(images, rows, size)


def _original(images, index):
    """Image ``index`` at its own size, RGB, for display."""
    if isinstance(images, ImageArray):
        return to_rgb(images.array[index : index + 1])[0]
    return decode_image(images.paths[index]).astype(np.float32)


def _displayable(picture):
    """uint8 for display (imshow clips float RGB to [0, 1]), whatever range a Keras
    model's input has."""
    picture = np.asarray(picture, dtype=np.float32)
    low, high = float(picture.min()), float(picture.max())
    if low >= 0 and high <= 1.0:
        picture = picture * 255.0
    elif low < 0 or high > 255:
        picture = (picture - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _as_picture(image):
    """An overlay's image as float (H, W, 3) in [0, 255]."""
    if isinstance(image, (str, os.PathLike)):
        return decode_image(os.fspath(image)).astype(np.float32)
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        return to_rgb(pixels[np.newaxis])[0]
    if pixels.ndim == 2:
        return to_rgb(pixels[np.newaxis])[0]
    raise ValueError(
        "`image` must be one image of shape (height, width), (height, width, 3) or "
        f"(height, width, 1|4), or a file path. Got an array of shape {pixels.shape}: "
        "for a batch, overlay each image with its own heatmap."
    )


def _check_heatmap(heatmap, name):
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or 0 in heat.shape:
        raise ValueError(
            f"`{name}` must be one heatmap of shape (height, width). Got shape "
            f"{heat.shape}; cam() returns a batch: pass one of them, e.g. heatmaps[0]."
        )
    if not np.isfinite(heat).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return heat


def _check_heatmaps(heatmaps, images, single):
    if single and np.ndim(heatmaps) == 2:
        heatmaps = [heatmaps]
    if len(heatmaps) != len(images):
        raise ValueError(
            f"`heatmaps` must hold one heatmap per image of X: X has {len(images)} "
            f"images, heatmaps has {len(heatmaps)}. Pass what cam(model, X) returned."
        )
    return [_check_heatmap(heat, f"heatmaps[{i}]") for i, heat in enumerate(heatmaps)]


def _package(heatmaps, single):
    if single:
        return heatmaps[0]
    if len({heat.shape for heat in heatmaps}) == 1:
        return np.stack(heatmaps)
    return heatmaps


def _resolve_targets(explainer, target, n_images):
    """Class index per image; -1 is the predicted class."""
    if target is None:
        return np.full(n_images, -1)
    if isinstance(target, (list, tuple, np.ndarray)) and np.ndim(target) == 1:
        if len(target) != n_images:
            raise ValueError(
                f"`target` must be one value for all images or one per image: X has "
                f"{n_images} images, target has {len(target)} values."
            )
        return np.asarray([_target_index(explainer, t) for t in target])
    return np.full(n_images, _target_index(explainer, target))


def _target_index(explainer, target):
    if target is None:
        return -1
    classes = explainer.classes
    for index, label in enumerate(classes.tolist()):
        if label == target:
            return index
    if isinstance(target, Integral) and not isinstance(target, (bool, np.bool_)):
        if 0 <= target < len(classes):  # not a label: an index
            return int(target)
    if explainer.plain:
        raise ValueError(
            f"`target` must be an output index of the Keras model, 0 to "
            f"{len(classes) - 1}. Got {target!r}. Leave target=None to explain the "
            "predicted class."
        )
    raise ValueError(
        f"`target` must be one of the model's classes {classes.tolist()!r} or an index "
        f"0 to {len(classes) - 1} into them. Got {target!r}. Leave target=None to "
        "explain the predicted class."
    )


# ------------------------------------------------------------------------- validation


def _check_method(method):
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, METHODS))}. Got {method!r}."
        )
    return method


def _check_positive_int(value, name):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Got {value!r}.")
    return int(value)


def _check_max_channels(max_channels):
    if max_channels is None:
        return None
    if not isinstance(max_channels, Integral) or isinstance(max_channels, bool) or max_channels < 1:
        raise ValueError(
            f"`max_channels` must be an int >= 1 or None (all channels). Got "
            f"{max_channels!r}."
        )
    return int(max_channels)


def _colorize(heat, colormap):
    """(H, W) in [0, 1] → (H, W, 3) RGB in [0, 1]."""
    if isinstance(colormap, str) and colormap == "jet":
        return np.stack(
            [np.interp(heat, *zip(*knots)) for knots in _JET], axis=-1
        )
    if callable(colormap):
        return np.asarray(colormap(heat), dtype=np.float64)[..., :3]
    if not isinstance(colormap, str):
        raise ValueError(
            f"`colormap` must be a colormap name or a matplotlib Colormap. Got "
            f"{colormap!r}."
        )
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError(
            f"`colormap`={colormap!r} needs matplotlib (pip install matplotlib); "
            "'jet' works without it."
        ) from exc
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as exc:
        raise ValueError(
            f"`colormap` must be 'jet' or a matplotlib colormap name such as "
            f"'viridis' or 'inferno'. Got {colormap!r}."
        ) from exc
    return np.asarray(cmap(heat), dtype=np.float64)[..., :3]
