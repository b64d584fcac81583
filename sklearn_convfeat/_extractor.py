"""ConvFeatureExtractor: a frozen pretrained convolutional base as a scikit-learn transformer."""

import copy
import dataclasses
import hashlib
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from . import _backend_choice, _backends, _cache
from ._backbone import TensorFlowRunner, get_base
from ._compat import HasMethods, StrOptions, fit_context
from ._decode import DRAFT_ENV_VAR
from ._feature_pass import extract_features
from ._images import ImageFiles, UnreadableImageWarning, check_images
from ._keras_state import BackboneParameterState
from ._pooling import POOLINGS, feature_names, n_pooled_features
from ._tta import TTA_OPTIONS
from ._validation import (
    BASE_PARAMETER_CONSTRAINTS,
    check_image_size,
    check_settings_unchanged,
    feature_settings,
    resolve_base,
)


class ConvFeatureExtractor(BackboneParameterState, TransformerMixin, BaseEstimator):
    """Features of images from the frozen convolutional base of a pretrained convnet.

    The feature-extraction recipe of Chollet, *Deep Learning with Python* §5.3.1: run
    images through a convolutional base (``keras.applications.VGG16(include_top=False)``
    by default) cut at ``layer``, and flatten or pool the feature map into one row per
    image, ready for any scikit-learn classifier. Nothing is learned: ``fit`` only validates, resolves the weights and
    records the output shape, except with ``quantize="int8"``, where it calibrates the
    8-bit model on the images it is given.

    Parameters
    ----------
    backbone : str or keras.Model, default="vgg16"
        The network: the name of a ``keras.applications`` convnet, matched without
        regard to case (``"vgg16"``, ``"resnet50"``, ``"EfficientNetV2B0"``,
        ``"convnext_tiny"``, ...; the user guide's "Choosing a backbone" lists them),
        or a built Keras model of one's own taking RGB images (its output is the
        end of the base). A model is copied in ``fit`` and pickled as ``.keras`` bytes.
        With the ``hub`` extra, also a keras-hub vision transformer: a preset name
        (``"dinov2_small"``, ``"siglip2_base_patch16_224"``,
        ``"clip_vit_base_patch16"``, ``"vit_base_patch16_224_imagenet"``), a
        ``kaggle://`` or ``hf://`` handle, a local preset folder, or a built
        ``keras_hub.models.Backbone`` (DINOv2, ViT, CLIP, SigLIP; for CLIP and
        SigLIP the vision tower is the base).
    weights : "imagenet", None or path, default="imagenet"
        ``"imagenet"`` downloads and caches the backbone's ImageNet weights through
        Keras (``~/.keras/models``; a file already there is used offline). The
        environment variable ``SKLEARN_CONVFEAT_WEIGHTS`` may name a local file (the
        VGG16 weights) or a folder of files under Keras' own names (air-gapped
        machines). For a model of one's own, ``"imagenet"`` means its own weights;
        for a keras-hub preset, the preset's own pretrained weights. A
        path loads a local ``.h5`` / ``.weights.h5`` / ``.keras`` file of the
        backbone's base. ``None`` gives random weights drawn from ``random_state``
        (for tests and baselines).
    layer : str or int, default=5
        Where the base is cut: a stage number 1-5, the end of the last block whose
        output is downsampled 2^N times (for VGG16 ``"block{N}_pool"``, for ResNet50
        ``"conv{N}_block{last}_out"``; 5 is the end of the base), or any layer name
        (``"block4_conv2"``). Lower layers hold generic features (edges, colours,
        textures), upper ones more abstract ones: cut lower for images far from
        ImageNet. For a transformer of D blocks, stage N ends after block
        round(N·D/5) (12 blocks: 2, 5, 7, 10, 12) and stage 5 after its final norm;
        its layers are ``"embeddings"``, ``"block_1"`` … ``"block_D"``,
        ``"final_norm"``.
    pooling : {"flatten", "avg", "max", "cls", "cls+avg", "embedding"}, \
            default="flatten"
        How the (h, w, c) feature map becomes one row: ``"flatten"`` keeps every value
        (the book's 4·4·512 = 8192 features at 150×150), ``"avg"`` and ``"max"`` pool
        over space to c features. A transformer's tokens: ``"cls"`` the class
        token, ``"avg"`` the mean of the patch tokens (never the class or register
        tokens), ``"cls+avg"`` both (DINOv2's linear evaluation), ``"flatten"`` the
        patch tokens, ``"embedding"`` CLIP's or SigLIP's own image embedding (with
        ``layer=5``); ``"max"`` is refused for transformers, the token poolings for
        convnets.
    image_size : (int, int), int or None, default=(150, 150)
        (height, width) every image is resized to (bilinear, antialiased); None is
        the network's native size (224 for most, 299 for Xception and Inception,
        240-600 for EfficientNetB1-B7, a preset's own size). A transformer takes
        square multiples of its patch size, other than its own only where keras-hub
        interpolates its position embeddings (DINOv2). A JPEG
        at least twice that size on both sides is first decoded by libjpeg at 1/2,
        1/4 or 1/8 scale (still above it), which bounds memory whatever the photos'
        resolution and changes its pixels slightly (see the user guide's
        Reliability section).
    preprocessing : str, default="auto"
        ``"auto"`` gives the backbone's ImageNet weights the input they were trained
        on: its family's ``keras.applications.<family>.preprocess_input`` (Caffe BGR
        mean for VGG and ResNet, [-1, 1] for MobileNet, Xception, Inception,
        ResNetV2 and NASNet, torch mean/std for DenseNet, nothing for EfficientNet,
        ConvNeXt and MobileNetV3, whose models include it), and the pixels in
        [0, 255] unchanged (``"none"``) for a model of one's own; a keras-hub
        preset's ImageConverter scale and offset begin its base. A family name
        (``"vgg16"``, ``"resnet_v2"``, ...) picks one explicitly; ``"rescale"`` is the
        book's ``x / 255``, which costs VGG16 about 8 points of accuracy on cats vs
        dogs.
    batch_size : int, default=32
        Images per forward pass; memory use grows with it, not with the number of
        images.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable image file does: ``"raise"`` stops with an error naming the
        file (missing files are reported before any work starts); ``"skip"`` fills its
        row with NaN, warns with :class:`UnreadableImageWarning`, and lists it in
        ``skipped_``.
    memory : None, str, path or joblib.Memory, default=None
        Cache of feature maps keyed by each image's content (file bytes or pixel
        values) and by the weights, image size, preprocessing and backend: a
        ``GridSearchCV`` over ``layer`` and ``pooling`` runs the base once per image in
        all, not once per fold and candidate. A folder (created if missing; a
        ``joblib.Memory`` stands for its ``location``) keeps them on disk, safe to
        share between processes; ``joblib.Memory(None)`` keeps them only in a
        process-wide in-memory cache bounded to 1 GiB (least recently used maps go
        first), which also fronts the disk. ``None`` caches nothing. The raw map of
        each requested layer is kept, and of block3/4/5_pool when a pass goes by them,
        so a deeper cut resumes from a cached shallower one; for VGG16 at 150×150 that
        is at most 0.53 MB per image. A cached result is exactly what computing it gives.
    verbose : int, default=0
        A progress bar over batches when > 0.
    random_state : int, RandomState instance or None, default=None
        Seed of the random weights when ``weights=None``; unused otherwise.
    backend : {"auto", "tensorflow", "onnxruntime", "openvino"}, default="auto"
        What runs the base. ``"onnxruntime"`` (extra ``sklearn-convfeat[onnx]``) and
        ``"openvino"`` (extra ``sklearn-convfeat[openvino]``) run a copy of the base
        exported once per weights, layer, image size and preprocessing, and kept in
        ``$KERAS_HOME/sklearn_convfeat/`` (``~/.keras/sklearn_convfeat/`` by default)
        for every later process. Their features equal TensorFlow's within 1e-4
        relative; only the speed differs. ``"auto"`` picks, in ``fit``, the fastest
        installed one measured for the network's family on this kind of CPU (on
        AVX-512: OpenVINO for ResNet and DenseNet, ONNX Runtime for MobileNetV2 and
        EfficientNetV2, 1.15-1.35x; TensorFlow for VGG, EfficientNet, transformers,
        one's own models and the rest), and an exported one only when its export is
        already on disk or ``X`` has enough images to pay for making it;
        ``backend_`` says which. With ``quantize="int8"`` it is ``"openvino"``.
    quantize : {None, "int8"}, default=None
        ``"int8"`` (with ``backend="openvino"`` or ``"auto"``) runs the base in 8-bit
        integers:
        ``fit`` calibrates NNCF post-training quantization on up to 300 of the images
        it is given (evenly spaced over ``X``). Faster, at some accuracy cost: the
        features are close to, not equal to, the FP32 ones. The quantized model is
        fitted state, pickled with the extractor and never recalibrated.
    tta : {None, "flip", "dihedral"}, default=None
        Test-time augmentation by feature averaging. ``"flip"``: the features of an
        image are the mean of the features of the image and of its horizontal
        mirror (mirrored after resizing to ``image_size``, before preprocessing).
        ``"dihedral"``: the mean over the 8 symmetries of the square (quarter turns,
        flips, diagonal reflections; 4 for non-square ``image_size``), for scenes
        seen from above: 8 forward passes per image.
        Each is pooled on its own before the mean, so that the features are those
        of two ordinary images averaged: with ``pooling="max"`` a mean of two
        maxima, with ``"flatten"`` the mean of the two flattened maps, position by
        position. It applies to every image ``transform`` sees, for training and
        prediction alike (``fit_transform``, a ``Pipeline``'s fit and predict): the
        classifier downstream trains on the same kind of features it predicts on.
        ``"flip"`` costs 2× the forward passes (each image is decoded once). With
        ``memory``, the mirror's maps are cache entries of their own, and the
        image's own entries are shared with ``tta=None``.

    Attributes
    ----------
    layer_ : str
        The layer name the base is cut at.
    image_size_ : tuple of int
        (height, width) images are resized to.
    preprocessing_ : str
        The preprocessing applied (what ``"auto"`` stands for).
    feature_map_shape_ : tuple of int
        (h, w, c) of the feature map at ``layer_`` before pooling.
    n_features_out_ : int
        Number of features per image.
    weights_path_ : str or None
        The local weights file used, or None for Keras' ImageNet cache and random
        weights.
    weights_sha256_ : str
        sha256 over the base's weight arrays: identifies the exact weights (the
        ImageNet base gives ``d9a27cc1...``); features are only ever computed with
        these.
    skipped_ : list of (int, str, str)
        (index, path, reason) of each file skipped by the most recent ``transform``
        call of this instance, when ``on_error="skip"``. Each call replaces it: with
        concurrent ``transform`` calls on one instance (threads), it describes
        whichever finished last; use the NaN rows of each call's result, or one
        extractor per thread, to tell them apart.
    backend_ : str
        The backend that runs the base: ``backend``, or what ``"auto"`` chose.
    n_calibration_images_ : int
        Images the INT8 model was calibrated on; only with ``quantize="int8"``.

    See Also
    --------
    KerasMLPClassifier : The book's dense head, to train on these features.

    Notes
    -----
    Features always come from the parameters the extractor was fitted with: after
    ``set_params`` changes one they depend on (``weights``, ``layer``, ``pooling``,
    ``image_size``, ``preprocessing``, ``backend``, ``quantize``, and
    ``random_state`` with random weights), ``transform`` and
    ``get_feature_names_out`` raise a ``ValueError`` asking for a new ``fit``.
    ``batch_size``, ``on_error``, ``memory``, ``verbose`` and ``tta`` may change at
    any time (``set_params(tta="flip")`` on a fitted pipeline augments only at
    prediction, on features of another kind than the classifier was trained on).

    The Keras model is never pickled: a fitted extractor stores how to rebuild it (the
    weights file or seed, checked against ``weights_sha256_``), and rebuilds it lazily
    in the new process. Bases are shared between estimators with the same weights, so
    clones made by ``GridSearchCV`` cost no rebuild. The same holds for the ONNX
    Runtime and OpenVINO models, which come back from the disk cache (re-exported if
    it was emptied); only an INT8 model, learned in ``fit``, travels in the pickle
    (its OpenVINO IR: about 15 MB for the whole base).

    References
    ----------
    F. Chollet, *Deep Learning with Python*, Manning, 2017, §5.3.1.
    K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015 (weights: CC BY 4.0, Visual Geometry Group, Oxford).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(6, 40, 40, 3), dtype=np.uint8)
    >>> y = [0, 1, 0, 1, 0, 1]
    >>> extractor = ConvFeatureExtractor(weights=None, image_size=(32, 32), random_state=0)
    >>> extractor.fit_transform(X).shape
    (6, 512)
    >>> extractor.get_feature_names_out()[:2]
    array(['block5_pool_0_0_0', 'block5_pool_0_0_1'], dtype=object)
    >>> pipe = Pipeline([("feat", extractor), ("clf", LogisticRegression())]).fit(X, y)
    >>> pipe.predict(X).shape
    (6,)
    """

    _parameter_constraints = {
        **{
            name: BASE_PARAMETER_CONSTRAINTS[name]
            for name in (
                "backbone",
                "weights",
                "layer",
                "image_size",
                "preprocessing",
                "batch_size",
                "verbose",
                "random_state",
            )
        },
        "pooling": [StrOptions(set(POOLINGS))],
        "on_error": [StrOptions({"raise", "skip"})],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "backend": [StrOptions({"auto", *_backends.BACKENDS})],
        "quantize": [StrOptions({"int8"}), None],
        "tta": [StrOptions(set(TTA_OPTIONS)), None],
    }

    def __init__(
        self,
        *,
        backbone="vgg16",
        weights="imagenet",
        layer=5,
        pooling="flatten",
        image_size=(150, 150),
        preprocessing="auto",
        batch_size=32,
        on_error="raise",
        memory=None,
        verbose=0,
        random_state=None,
        backend="auto",
        quantize=None,
        tta=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.on_error = on_error
        self.memory = memory
        self.verbose = verbose
        self.random_state = random_state
        self.backend = backend
        self.quantize = quantize
        self.tta = tta

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters and ``X``, and load the weights.

        Nothing is learned, except with ``quantize="int8"``: the INT8 model is then
        calibrated on up to 300 images of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width[, channels]) or sequence of str
            Images (uint8 or float pixel values in [0, 255], uint16 in [0, 65535];
            grey, RGB or RGBA), or image file paths (JPEG, PNG, BMP, GIF, WebP),
            in the order of ``y``.
        y : ignored
            Accepted for Pipeline compatibility.

        Returns
        -------
        self : ConvFeatureExtractor
            The fitted extractor.
        """
        images = check_images(X)
        if y is not None:
            check_consistent_length(images, y)
        if isinstance(images, ImageFiles) and self.on_error == "raise":
            images.check_exist()
        if self.quantize is not None and self.backend not in ("openvino", "auto"):
            raise ValueError(
                f"`quantize={self.quantize!r}` needs `backend='openvino'` (NNCF "
                f"quantizes the OpenVINO model). Got backend={self.backend!r} instead: "
                "set backend='openvino' or 'auto', or quantize=None."
            )
        if self.backend != "auto" or self.quantize is not None:
            _backends.check_backend(
                "openvino" if self.quantize else self.backend, self.quantize
            )
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        source, entry, self.image_size_, self.preprocessing_ = resolve_base(self, seed)
        self._weights_source = source
        self.layer_ = entry.resolve_layer(self.layer)
        self._pooling = entry.pooling(self.pooling, self.layer_)
        if getattr(self._pooling, "name", None) == "embedding":
            self.layer_ = entry.graph.names[-1]  # the network's own image embedding
        self.feature_map_shape_ = check_image_size(entry, self.image_size_, self.layer_)
        self.weights_sha256_ = entry.sha256
        self.weights_path_ = source.path
        self.n_features_out_ = n_pooled_features(self._pooling, self.feature_map_shape_)
        cut = (source, self.layer_, self.image_size_, self.preprocessing_)
        self.backend_ = self.backend
        if self.backend == "auto":
            self.backend_ = _backend_choice.choose_backend(*cut, len(images), self.quantize)
        self._fitted_settings = feature_settings(self)
        self._quantized_ir = None
        self.__dict__.pop("n_calibration_images_", None)  # from an earlier INT8 fit
        if self.quantize == "int8":
            *self._quantized_ir, self.n_calibration_images_ = _backends.quantize_int8(
                self._weights_source, self.layer_, self.image_size_,
                self.preprocessing_, images, batch_size=self.batch_size,
                on_error=self.on_error, verbose=self.verbose,
            )
            self._quantized_ir = tuple(self._quantized_ir)
        # Built now, so that transform leaves the estimator's __dict__ untouched.
        self.backend_, self._runner = _backend_choice.start_runner(
            self.backend, self.backend_, *cut, quantized_ir=self._quantized_ir
        )
        if self.memory is not None:
            self._feature_store()  # a bad `memory` fails here, not in transform
        return self

    def transform(self, X):
        """Run the images through the base and return one row of features each.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width[, channels]) or sequence of str
            Images or image file paths, as in :meth:`fit`. Paths are decoded one batch
            at a time, in a background thread that overlaps with the forward pass.

        Returns
        -------
        features : ndarray of shape (n_images, n_features_out_), dtype float32
            Rows of skipped files (``on_error="skip"``) are NaN.
        """
        check_is_fitted(self)
        check_settings_unchanged(self, getattr(self, "_fitted_settings", None))
        cached = self.memory is not None
        features, skipped = extract_features(
            check_images(X),
            feature_runner(self),
            entry=get_base(self._weights_source) if cached else None,
            layer=self.layer_,
            pooling=fitted_pooling(self),
            n_features=self.n_features_out_,
            image_size=self.image_size_,
            batch_size=self.batch_size,
            on_error=self.on_error,
            verbose=self.verbose,
            store=self._feature_store() if cached else None,
            tta=self.tta,
        )
        if self.on_error == "skip":
            self.skipped_ = skipped
            if skipped:
                shown = ", ".join(repr(path) for _, path, _ in skipped[:5])
                warnings.warn(
                    f"Skipped {len(skipped)} unreadable image file(s): {shown}"
                    f"{' ...' if len(skipped) > 5 else ''}. Their rows are NaN; "
                    "`skipped_` lists (index, path, reason).",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
        return features

    def get_feature_names_out(self, input_features=None):
        """Names of the output features.

        ``"{layer}_{row}_{col}_{channel}"`` for ``pooling="flatten"`` (row-major, as
        the values are laid out), ``"{layer}_{pooling}_{channel}"`` otherwise.

        Parameters
        ----------
        input_features : ignored
            Images have no input feature names.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        check_settings_unchanged(self, getattr(self, "_fitted_settings", None))
        return feature_names(self.layer_, fitted_pooling(self), self.feature_map_shape_)

    def _feature_store(self):
        quantized = getattr(self, "_quantized_ir", None)
        source = self._weights_source
        namespace, settings = _cache.namespace_key(
            backbone=source.plugin.key(source),
            input_size=source.input_size,
            weights_sha256=self.weights_sha256_,
            image_size=self.image_size_,
            preprocessing=self.preprocessing_,
            backend=self.backend_,
            jpeg_draft=os.environ.get(DRAFT_ENV_VAR) != "0",  # decoded pixels differ
            # An INT8 model is learned in fit: its maps are its own.
            int8_model_sha256=None if quantized is None else hashlib.sha256(
                b"".join(quantized)
            ).hexdigest(),
        )
        return _cache.FeatureStore(_cache.resolve_location(self.memory), namespace, settings)

    def __getstate__(self):
        # The runner is process-local: rebuilt lazily after unpickling.
        state = dict(super().__getstate__())
        state.pop("_runner", None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state.setdefault("backbone", "vgg16")  # pickled before backbones existed
        state.setdefault("tta", None)  # pickled before tta existed
        state.setdefault("backend", "tensorflow")  # pickled before backends existed
        if "_fitted_settings" in state and "layer_" in state:
            state.setdefault("preprocessing_", state.get("preprocessing"))
            state.setdefault("backend_", state["backend"])  # pickled before "auto"
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Inputs are image batches (3-D/4-D arrays) or paths. two_d_array stays True
        # only so that parametrize_with_checks runs; tests/test_common.py lists the
        # checks that feed 2-D tables and why they cannot apply.
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def feature_runner(extractor):
    """The runner of a fitted extractor: its backend, its weights (hash-checked).

    The object has ``maps(images)`` (raw maps at ``layer_``) and
    ``features(images, pooling)`` (what ``transform`` gives) for float32 RGB images
    ``(N, H, W, 3)`` in [0, 255] at ``image_size_``. Built once per extractor and
    process.
    """
    check_is_fitted(extractor)
    runner = getattr(extractor, "_runner", None)
    if runner is None:
        _check_weights_unchanged(extractor)
        runner = extractor._runner = _backend_choice.make_runner(
            extractor.backend_, extractor._weights_source, extractor.layer_,
            extractor.image_size_, extractor.preprocessing_,
            quantized_ir=getattr(extractor, "_quantized_ir", None),
        )
    return runner


def feature_store(extractor):
    """The feature cache (a :class:`~._cache.FeatureStore`) of a fitted extractor
    whose ``memory`` is set, or None."""
    check_is_fitted(extractor)
    return None if extractor.memory is None else extractor._feature_store()


def fitted_pooling(extractor):
    """The pooling value a fitted extractor pools with (see :mod:`._pooling`)."""
    check_is_fitted(extractor)
    return getattr(extractor, "_pooling", extractor.pooling)  # older pickles: the name


def tensorflow_runner(extractor):
    """The fitted extractor's base run by TensorFlow, whatever its backend.

    A :class:`~._backbone.TensorFlowRunner`: besides ``maps`` and ``features``, its
    ``model`` is the shared Keras base, for code that needs the graph (gradients).
    """
    check_is_fitted(extractor)
    _check_weights_unchanged(extractor)
    return TensorFlowRunner(
        extractor._weights_source, extractor.layer_, extractor.preprocessing_
    )


def weights_source(extractor):
    """The :class:`~._weights.WeightsSource` a fitted extractor reads its weights from."""
    check_is_fitted(extractor)
    return extractor._weights_source


def with_weights_file(extractor, path):
    """A copy of a fitted extractor reading its (identical) weights from ``path``.

    For processes that see the weights under another path (cluster workers). Raises
    a ``RuntimeError`` when the file holds other weights than the extractor was
    fitted with.
    """
    local = copy.copy(extractor)
    local._weights_source = dataclasses.replace(
        extractor._weights_source, kind="file", path=os.fspath(path)
    )
    local._runner = None
    feature_runner(local)
    return local


def _check_weights_unchanged(extractor):
    source = extractor._weights_source
    sha256 = get_base(source).sha256
    if sha256 != extractor.weights_sha256_:
        raise RuntimeError(
            f"The weights at {source.describe()} changed since this extractor was "
            f"fitted (sha256 {sha256[:12]}… instead of "
            f"{extractor.weights_sha256_[:12]}…). Fit it again to use them."
        )
