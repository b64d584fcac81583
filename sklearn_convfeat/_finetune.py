"""FineTuner: the book's two-phase fine-tuning of a convnet as a scikit-learn classifier.

Phase 1 trains the dense head on the frozen base; phase 2 unfreezes the top
``unfreeze`` stages and trains them with the head at a very low learning rate. How each
phase runs (end to end, or on the cached output of the frozen prefix) is in
``_finetune_phases``.
"""

from numbers import Integral, Real

from sklearn.base import ClassifierMixin

from ._compat import Interval, StrOptions, fit_context
from ._finetune_base import BaseFineTuner
from ._map_augmentation import CACHED_AUGMENTATIONS
from ._optimization import OPTIMIZERS, SCHEDULES
from ._stages import N_STAGES
from ._targets import ClassTargetsMixin
from ._tta import TTA_OPTIONS
from ._validation import BASE_PARAMETER_CONSTRAINTS


class FineTuner(ClassTargetsMixin, ClassifierMixin, BaseFineTuner):
    """Fine-tune the top of a convnet with a dense head: the book's §5.3.2 recipe.

    1. Build the convolutional base (VGG16 by default) + Flatten → Dense(relu) →
       Dropout → Dense(sigmoid for two classes, softmax for more).
    2. Phase 1: train the head with the whole base frozen.
    3. Phase 2: unfreeze the top ``unfreeze`` stages and train them with the head at
       a very low learning rate. BatchNormalization layers stay in inference mode
       (the base runs with ``training=False``), as Keras' transfer-learning guide
       advises: otherwise the first epochs wreck the pretrained statistics.

    The output of the frozen blocks is computed once per image (and once per mirror
    image, for the default ``augment="cached"``) and cached (``cache``), so each
    epoch only runs the unfrozen top and the head: the same training, several times
    faster per epoch on a CPU. Each phase's learning rate warms up, then anneals
    along a cosine (``schedule``), with AdamW by default.

    Parameters
    ----------
    backbone : str or keras.Model, default="vgg16"
        As for :class:`ConvFeatureExtractor`: a keras.applications convnet name, a
        built Keras model of one's own, or a keras-hub vision transformer (``unfreeze``
        counts its stages of blocks; the head reads its class and mean patch tokens,
        or CLIP's and SigLIP's image embedding; DINOv2's patch and position
        embeddings stay frozen).
    weights : "imagenet", None or path, default="imagenet"
        As for :class:`ConvFeatureExtractor`: Keras' ImageNet download (or the files
        ``SKLEARN_CONVFEAT_WEIGHTS`` names), a local weights file, or None for random
        weights drawn from ``random_state``.
    unfreeze : int or "auto", default="auto"
        Stages trained in phase 2, counted from the top, with the stage boundaries
        of :class:`ConvFeatureExtractor`'s ``layer``: for VGG16 1 is block5 (the
        book's choice), 5 the whole base; 0 keeps the base frozen and skips phase 2.
        At most the number of stages the network has. ``"auto"`` decides from the
        data, as ``fine_tune_learning_rate``, ``pooling`` and ``augment`` do, and is
        1 for both outcomes of the probe below: on aerial scenes, training block4
        with block5 (the cache at block3) scored the same as block5 alone at 4
        times the cost per epoch (``_finetune_auto.RELEARN``). Linear probes
        of the frozen top three stages (standardized average-pooled maps,
        LogisticRegression, trained on two thirds of at most 1000 training images
        and scored on the rest) tell whether the top stage probes best (its
        features suit the data: cats vs dogs) or a lower one does (the top's
        features are wrong for the data: aerial scenes). ``unfreeze_`` and
        ``auto_probe_`` record the decision. The probe costs one frozen forward
        pass over those images.
    image_size : (int, int), int or None, default=(150, 150)
        (height, width) every image is resized to; None is the network's native size.
    preprocessing : str, default="auto"
        As for :class:`ConvFeatureExtractor`: ``"auto"`` is what the backbone's
        ImageNet weights expect (``keras.applications.vgg16.preprocess_input`` for
        VGG16); a family name; or ``"rescale"``, the book's ``x / 255``.
    pooling : {"auto", "flatten", "avg"}, default="auto"
        How the head makes one vector of the base's output map: ``"flatten"`` keeps
        every value (the book's), ``"avg"`` averages each channel over the map
        (512 values for VGG16; for a transformer, the mean patch token instead of the
        class and mean patch tokens). ``"auto"``: ``"flatten"`` where the top stage
        probes best, ``"avg"`` where a lower stage does (see ``unfreeze``).
    hidden_units : int, default=256
        Units of the head's hidden Dense layer.
    dropout : float, default=0.5
        Dropout rate before the output layer.
    augment : {"auto", "cached", "flip", "dihedral"}, bool or dict, default="auto"
        Augmentation at cached cost (the frozen prefix still runs once per image
        variant, not once per epoch):

        - ``"flip"``: the exact horizontal flip. The prefix runs on each image and on
          its mirror; each epoch trains on one of the two, drawn per image.
        - ``"cached"``: the flip, and in phase 2 a shift of the drawn map by up to one
          cell in each direction (zeros shifted in): one cell of VGG16's
          ``block4_pool`` is 16 image pixels. This approximates translating the image
          (exact away from the borders); ``benchmarks/bench_finetune.py`` measures it
          against image-space augmentation.
        - ``"dihedral"``: the 8 symmetries of the square (quarter turns, flips,
          diagonal reflections), exact symmetries of scenes seen from above
          (aerial, satellite, microscopy), with the shift of ``"cached"``. The prefix
          runs on all 8 variants of each image once (4 for non-square images: the
          flips and the half turn): 8 prefix passes in all, not 8 per epoch.
        - ``"auto"``: ``"dihedral"`` when the data show no orientation, else
          ``"cached"``. The probe of ``unfreeze="auto"`` decides: its best stage is
          scored again on the held-out images turned by 90°; within 5 points of the
          upright score, orientation carries no information (``augment_`` records
          the choice). Non-square images get ``"cached"``.

        When training runs end to end (``cache=None``, every stage unfrozen, or a cut
        that is not a cut point of the graph), these become their image-space
        equivalents (random flip; random quarter turns for ``"dihedral"``; random
        translation by the same number of pixels).

        True applies the book's image-space augmentation while training (rotation
        40°, width and height shift 0.2, shear 0.2, zoom 0.2, horizontal flip; Keras 3
        preprocessing layers, inactive at prediction); a dict overrides single settings
        of ``AUGMENT_DEFAULTS`` (``rotation_range``, ``width_shift_range``,
        ``height_shift_range``, ``shear_range``, ``zoom_range``, ``horizontal_flip``,
        ``fill_mode``). Image-space augmentation changes the images every epoch, so it
        disables the cache: expect each epoch to cost a full forward pass of the base
        (fine on a GPU). False trains on the images as given.
    optimizer : {"adamw", "rmsprop", "adam", "sgd", "nadam", "adagrad"}, default="adamw"
        Keras optimizer of both phases, built anew for each (the book's: RMSprop).
    head_epochs : int, default=30
        Epochs of phase 1.
    head_learning_rate : float or "auto", default="auto"
        Peak learning rate of phase 1 (the book's: 2e-5 with RMSprop, constant). The
        head's phase runs on the cached output of the base: 30 epochs take seconds.
        ``"auto"``: 1e-4 where the top stage probes best (see ``unfreeze``), 1e-3
        where a lower one does (the averaged map's head learns slowly at 1e-4).
    fine_tune_epochs : int, default=10
        Epochs of phase 2 (the book's 100, on a GPU with image-space augmentation;
        on cats vs dogs at 150 px the validation accuracy stops moving after a few
        epochs of cached augmentation).
    fine_tune_learning_rate : float or "auto", default="auto"
        Peak learning rate of phase 2. ``"auto"``: the book's 1e-5 where the top
        stage probes best (see ``unfreeze``; small, so the pretrained features are
        adjusted rather than destroyed: at 1e-4, with block5 at 3e-5, test accuracy
        fell by 3-4 points on cats vs dogs), 1e-4 where a lower stage probes better
        (the top stage's features have to be relearned: on aerial scenes 1e-4 beat
        1e-5 and 3e-4).
    batch_size : int, default=20
        Minibatch size of training and prediction (the book's 20).
    early_stopping : bool, default=False
        Stop each phase when the validation loss has not improved for
        ``n_iter_no_change`` epochs, and restore its best weights. Validation data is
        ``validation_data`` passed to ``fit``, or else ``validation_fraction`` of the
        training images, held out stratified by class.
    validation_fraction : float, default=0.1
        Share of the training images held out when ``early_stopping`` is True and
        ``fit`` gets no ``validation_data``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, keyed by the labels of ``y``.
    cache : {"auto", "memory", "disk"} or None, default="auto"
        Where the frozen-prefix outputs go: ``"auto"`` keeps them in memory when they
        take at most half of the memory available at the start of ``fit``, and in a
        temporary memory-mapped file otherwise; ``"memory"`` and ``"disk"`` force
        either; None trains end to end. Ignored (end-to-end) with image-space
        augmentation (``augment=True`` or a dict) or when every stage is unfrozen.
    schedule : {"cosine", "constant"}, default="cosine"
        Learning rate over each phase: ``"cosine"`` warms up linearly from 4 % of the
        phase's rate over ``warmup`` of its steps, then anneals it to 0 along a
        cosine (fastai's ``fit_one_cycle`` shape); ``"constant"`` keeps it fixed (the
        book's). With early stopping the schedule still spans the planned epochs.
    warmup : float, default=0.1
        Share of each phase's steps spent warming up, with ``schedule="cosine"``.
    lr_mult : float, default=1.0
        Discriminative learning rates (fastai's ``lr_mult``): in phase 2 the top
        unfrozen stage trains at ``fine_tune_learning_rate * lr_mult``, the next at
        ``* lr_mult**2``, and so on; the head at ``fine_tune_learning_rate``.
    gradual_unfreezing : bool, default=False
        Unfreeze one stage at a time: phase 2 runs ``unfreeze`` steps, the k-th
        training the top k stages, sharing ``fine_tune_epochs`` between them (the
        last takes the remainder).
    weight_decay : float, default=1e-4
        Decoupled weight decay of the optimizer (what makes ``"adamw"`` AdamW); 0 is
        none. Keras applies it per step as ``w -= learning_rate * weight_decay * w``:
        at these learning rates a gentle pull (1e-9 of each weight per step).
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy, in [0, 1): targets move
        ``label_smoothing / 2`` (binary) or ``label_smoothing / n_classes`` towards
        uniform.
    tta : {"flip", "dihedral"} or None, default=None
        Test-time augmentation: ``"flip"`` averages the probabilities of each image
        and of its mirror in :meth:`predict_proba` (twice the prediction cost);
        ``"dihedral"`` over the 8 symmetries of the square (4 for non-square
        images), the natural partner of ``augment="dihedral"`` (8 times the cost).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation (and random base weights), dropout, shuffling,
        augmentation and the validation split: an int gives the same predictions on
        the same CPU. Keras' global random state is never touched.
    verbose : int, default=0
        Keras progress bars when > 0 (2: one line per epoch).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    model_ : keras.Model
        The full network, images in [0, 255] → class probabilities: an
        ``"augmentation"`` block (with ``augment``), a ``"preprocessing"`` layer, the
        nested base (named as the network, e.g. ``"vgg16"``), and the head.
        :func:`cam` explains it.
    image_size_ : tuple of int
        (height, width) images are resized to.
    preprocessing_ : str
        The preprocessing applied (what ``"auto"`` stands for).
    history_ : dict of str to list
        Per-epoch ``loss``, ``accuracy`` (and ``val_*``) over both phases,
        ``phase`` (1 or 2), ``stages_trained`` (0 in phase 1), ``learning_rate``
        (the head's, at the end of the epoch) and ``epoch_seconds`` (wall time) of
        each epoch.
    fine_tune_start_ : int
        Index in ``history_`` of the first epoch of phase 2 (the number of phase-1
        epochs run).
    cache_ : {"memory", "disk"} or None
        Where the frozen-prefix cache was kept in this fit, None if not used.
    unfreeze_ : int
        Stages trained in phase 2 (what ``"auto"`` decided, or ``unfreeze``).
    head_learning_rate_ : float
        Peak learning rate of phase 1 (what ``"auto"`` decided, or the parameter).
    fine_tune_learning_rate_ : float
        Peak learning rate of phase 2 (what ``"auto"`` decided, or the parameter).
    pooling_ : {"flatten", "avg"}
        The head's pooling (what ``"auto"`` decided, or ``pooling``).
    augment_ : str, bool or dict
        The augmentation applied (what ``"auto"`` decided, or ``augment``).
    auto_probe_ : dict or None
        The probe behind the ``"auto"`` settings: ``stage_scores`` (held-out score
        of each probed stage), ``best_stage``, ``upright_score``, ``rotated_score``
        (None for non-square images) and ``n_images``; None when neither setting is
        ``"auto"`` or the images are too few to hold a third out (then ``"auto"``
        means the book's settings: ``unfreeze=1``, ``fine_tune_learning_rate=1e-5``,
        ``pooling="flatten"``, ``augment="cached"``).
    image_size_ : tuple of int
        (height, width) images are resized to.
    weights_sha256_ : str
        sha256 of the pretrained base's weights at the start of fit.

    See Also
    --------
    ConvFeatureExtractor : Frozen features for any scikit-learn classifier.
    KerasMLPClassifier : The same head on precomputed features.

    References
    ----------
    F. Chollet, *Deep Learning with Python*, Manning, 2017, §5.3.2.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convfeat import FineTuner
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> X[::2] //= 4  # dark images are class "night"
    >>> y = np.array(["night", "day"] * 4)
    >>> tuner = FineTuner(weights=None, image_size=32, head_epochs=2,
    ...                   fine_tune_epochs=1, batch_size=4, random_state=0)
    >>> tuner.fit(X, y).predict_proba(X).shape
    (8, 2)
    >>> tuner.history_["phase"]
    [1, 1, 2]
    """

    _parameter_constraints = {
        **{
            name: BASE_PARAMETER_CONSTRAINTS[name]
            for name in (
                "backbone",
                "weights",
                "image_size",
                "preprocessing",
                "batch_size",
                "verbose",
                "random_state",
            )
        },
        "unfreeze": [Interval(Integral, 0, N_STAGES, closed="both"), StrOptions({"auto"})],
        "pooling": [StrOptions({"auto", "flatten", "avg"})],
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "augment": ["boolean", dict, StrOptions({*CACHED_AUGMENTATIONS, "auto"})],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "head_epochs": [Interval(Integral, 0, None, closed="left")],
        "head_learning_rate": [Interval(Real, 0, None, closed="neither"),
                               StrOptions({"auto"})],
        "fine_tune_epochs": [Interval(Integral, 0, None, closed="left")],
        "fine_tune_learning_rate": [Interval(Real, 0, None, closed="neither"),
                                    StrOptions({"auto"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "cache": [StrOptions({"auto", "memory", "disk"}), None],
        "schedule": [StrOptions(set(SCHEDULES))],
        "warmup": [Interval(Real, 0, 1, closed="left")],
        "lr_mult": [Interval(Real, 0, None, closed="neither")],
        "gradual_unfreezing": ["boolean"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "tta": [StrOptions(set(TTA_OPTIONS)), None],
    }

    def __init__(
        self,
        *,
        backbone="vgg16",
        weights="imagenet",
        unfreeze="auto",
        image_size=(150, 150),
        preprocessing="auto",
        pooling="auto",
        hidden_units=256,
        dropout=0.5,
        augment="auto",
        optimizer="adamw",
        head_epochs=30,
        head_learning_rate="auto",
        fine_tune_epochs=10,
        fine_tune_learning_rate="auto",
        batch_size=20,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        cache="auto",
        schedule="cosine",
        warmup=0.1,
        lr_mult=1.0,
        gradual_unfreezing=False,
        weight_decay=1e-4,
        label_smoothing=0.0,
        tta=None,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.unfreeze = unfreeze
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.pooling = pooling
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.augment = augment
        self.optimizer = optimizer
        self.head_epochs = head_epochs
        self.head_learning_rate = head_learning_rate
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.cache = cache
        self.schedule = schedule
        self.warmup = warmup
        self.lr_mult = lr_mult
        self.gradual_unfreezing = gradual_unfreezing
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.tta = tta
        self.random_state = random_state
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, validation_data=None):
        """Train the head (phase 1), then the top ``unfreeze`` blocks with it (phase 2).

        Parameters
        ----------
        X : array-like of shape (n_images, height, width[, channels]) or sequence of str
            Training images (pixel values in [0, 255]) or image file paths; paths are
            decoded batch by batch, so memory is bounded by the batch.
        y : array-like of shape (n_images,) or (n_images, n_labels)
            Class labels of any type; at least two classes. Or, for multi-label
            classification, a 0/1 indicator matrix with one column per label: the
            head then has one sigmoid output per label, trained on the binary
            cross-entropy, ``classes_`` is ``arange(n_labels)``, ``class_weight``
            is not supported, and the early-stopping hold-out is a plain shuffled
            split instead of a stratified one.
        validation_data : (X_val, y_val), default=None
            Images and labels to report ``val_*`` metrics on and, with
            ``early_stopping``, to stop on.

        Returns
        -------
        self : FineTuner
            The fitted classifier.
        """
        return self._fit(X, y, validation_data)

    def predict_proba(self, X):
        """Probability of each class of ``classes_`` (or of each label) for each image.

        For multi-label ``y``, column ``k`` is the probability that label ``k`` is 1.

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths, as in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
            Rows sum to one, except for multi-label ``y``, where column ``k`` is
            the probability that label ``k`` is 1.
        """
        outputs = self._outputs(X)  # checks fitted before the targets are read
        return self._targets().probabilities(outputs)

    def predict(self, X):
        """Most probable class of each image, or its 0/1 labels (multi-label).

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths.

        Returns
        -------
        y_pred : ndarray of shape (n_images,) or (n_images, n_labels)
            For multi-label ``y``, the indicator of the labels whose probability
            exceeds 0.5.
        """
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self._targets().predict(proba)

    def decision_function(self, X):
        """Log-odds of the second class, of each label, or log-probabilities.

        Binary: the log-odds of the second class; multi-label: of each label;
        multi-class: the log-probability of each class.

        Parameters
        ----------
        X : array-like of images or sequence of str
            As for :meth:`predict`.

        Returns
        -------
        scores : ndarray of shape (n_images,) or (n_images, n_classes)
            From :meth:`predict_proba`, clipped at 1e-12 before the logarithm.
        """
        proba = self.predict_proba(X)
        return self._targets().decision(proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = True
        return tags
