"""``cam``: class activation heatmaps of a fitted model."""

from numbers import Integral, Real

from .._compat import Interval, StrOptions, validate_params
from ._adapters import make_adapter
from ._explain import explain
from ._inputs import check_X, package, resolve_targets
from ._registry import METHODS

CAM_PARAMETERS = {
    "model": "no_validation",
    "X": "no_validation",  # check_images gives the image-specific errors
    "target": "no_validation",  # a label, labels, an index or "predicted": see cam
    "layer": "no_validation",  # a name or block number, checked against the model
    "method": [StrOptions(set(METHODS))],
    "max_channels": [Interval(Integral, 1, None, closed="left"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "n_samples": [Interval(Integral, 1, None, closed="left"), None],
    "noise": [Interval(Real, 0, None, closed="neither")],
    "aug_smooth": ["boolean"],
    "random_state": ["random_state"],
}


@validate_params(CAM_PARAMETERS, prefer_skip_nested_validation=True)
def cam(
    model,
    X,
    *,
    target="predicted",
    layer=None,
    method="gradcam",
    max_channels=64,
    batch_size=32,
    n_samples=None,
    noise=0.15,
    aug_smooth=False,
    random_state=0,
):
    """Class activation heatmaps: where in each image the evidence for a class lies.

    A method weighs the channels of one convolutional layer's feature map; the ReLU
    of the weighted sum, upsampled to the image, is the heatmap. Grad-CAM, the
    recipe of Chollet, *Deep Learning with Python* §5.4.3, weighs each channel by the
    spatial mean of the gradient of the class score.

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
    target : "predicted", label, int or array-like of shape (n_images,), \
            default="predicted"
        The class to explain: ``"predicted"`` (or None) is the predicted class of
        each image; a label of ``classes_``; an int that is not a label is an index
        into ``classes_``. For a Keras model, the output index (with one sigmoid
        output: 1 is the output unit's class and 0 the other one). An array gives one
        target per image.
    layer : str, int or None, default=None
        The convolutional layer whose feature map is weighed. None takes the last
        convolutional layer: ``"block5_conv3"`` for a :class:`FineTuner` and for a
        pipeline cut at block 5, the last convolutional layer at or before the cut
        for other pipelines. For the VGG16 models, an int N means
        ``"block{N}_pool"``. For a pipeline, the layer must be at or before the
        extractor's cut ``layer_``. For a keras-hub transformer (pipeline or
        FineTuner) the maps are a block's patch tokens laid out on the patch grid
        (class and register tokens left out); None takes the input of the last block
        up to the cut, whose class token reads the patch tokens there.
    method : str, default="gradcam"
        How the channels are weighed (each cites its paper in
        ``sklearn_convfeat._cam``'s method modules):

        - ``"gradcam"`` (Selvaraju et al. 2017): spatial mean of the gradient.
        - ``"gradcam++"`` (Chattopadhay et al. 2018): positive gradients weighed by
          higher-order terms.
        - ``"hirescam"`` (Draelos & Carin 2020): gradient × activation cell by cell.
        - ``"xgradcam"`` (Fu et al. 2020): gradient averaged with the activation.
        - ``"layercam"`` (Jiang et al. 2021): positive gradient × activation cell by
          cell; good at shallow layers.
        - ``"eigencam"`` (Muhammad & Yeasin 2020): first principal component of the
          map; no gradient, not class-specific.
        - ``"scorecam"`` (Wang et al. 2020): the class probability's increase over a
          blank image when the channel's map masks the image.
        - ``"ablationcam"`` (Ramaswamy & Desai 2020): the share of the class score
          lost when the channel is zeroed.

        The last two run the model once per channel and image (``max_channels``).
    max_channels : int or None, default=64
        Score-CAM and Ablation-CAM: the channels tried per image, those of largest
        mean activation (None: all, 512 passes per image at block5). Ignored by the
        other methods.
    batch_size : int, default=32
        Images per forward pass, and masked or ablated copies per pass for Score-CAM
        and Ablation-CAM, whose memory is that of ``batch_size`` inputs whatever
        ``max_channels``.
    n_samples : int or None, default=None
        SmoothGrad-style averaging (Smilkov et al. 2017; Omeiza et al. 2019,
        "Smooth Grad-CAM++"): the mean heatmap over ``n_samples`` copies of each
        image with Gaussian noise added. None adds no noise.
    noise : float, default=0.15
        Standard deviation of that noise, as a share of each image's value range.
    aug_smooth : bool, default=False
        Average the heatmaps of the image, its horizontal flip and a 1.15× zoom on
        its centre (and the zoom's flip), each mapped back onto the image: 4 times
        the work, steadier maps.
    random_state : int, RandomState instance or None, default=0
        Seeds the noise of ``n_samples``.

    Returns
    -------
    heatmaps : ndarray of shape (n_images, height, width), or list of ndarray
        Heatmaps (float32) in [0, 1], each at its image's own size (bilinear
        upsampling), divided by its maximum (an image with no positive evidence for
        the class gets all zeros). An ndarray when all images share a size, a list
        of (height, width) arrays otherwise, and one (height, width) array when
        ``X`` is a single image.

    See Also
    --------
    CamDisplay : Heatmaps with the class explained and its probability, and a figure.
    overlay : Lay a heatmap over its image.
    cam_metrics : Deletion, insertion, ROAD and confidence metrics of heatmaps.

    Notes
    -----
    The score differentiated by the gradient methods is the logit, the class score
    before the final sigmoid or softmax (which would squash the gradient of
    confident predictions to nothing): the target class's logit for a softmax output;
    for one sigmoid output ``z``, ``z`` for the positive class (``classes_[1]``) and
    ``-z`` for the other; ``decision_function`` for a linear classifier, with the
    same sign convention for two classes. For a Keras model, the logit is taken when
    its last layer is a ``Dense`` with a sigmoid or softmax activation, or an
    ``Activation``/``Softmax`` layer; otherwise its output is taken as the logits.

    With a linear classifier and ``layer`` equal to the extractor's cut, the gradient
    is exact and needs no backward pass: the coefficient vector (divided by the
    scalers' scales) laid out over the map.

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
    >>> cam(pipe, X[0], method="layercam").shape  # one image, one heatmap
    (40, 40)
    """
    return explain_images(
        model, X, target=target, layer=layer, method=method, max_channels=max_channels,
        batch_size=batch_size, n_samples=n_samples, noise=noise, aug_smooth=aug_smooth,
        random_state=random_state,
    ).heatmaps


@validate_params(CAM_PARAMETERS, prefer_skip_nested_validation=True)
def explain_images(model, X, *, target="predicted", layer=None, method="gradcam",
                   max_channels=64, batch_size=32, n_samples=None, noise=0.15,
                   aug_smooth=False, random_state=0):
    """Bunch(heatmaps as cam returns them, targets: class index per image, proba,
    classes, images, single) for the public functions of this package."""
    adapter = make_adapter(model, layer)
    images, single = check_X(X, adapter)
    targets = resolve_targets(adapter, target, len(images))
    result = explain(
        adapter, images, targets, METHODS[method], max_channels=max_channels,
        batch_size=batch_size, n_samples=n_samples, noise=noise, aug_smooth=aug_smooth,
        random_state=random_state,
    )
    result.heatmaps = package(result.heatmaps, single)
    result.update(classes=adapter.classes, images=images, single=single)
    return result
