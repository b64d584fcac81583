"""FineTunerRegressor: FineTuner's two-phase fine-tuning for numeric targets."""

from sklearn.base import RegressorMixin

from ._compat import fit_context
from ._finetune import FineTuner
from ._finetune_base import BaseFineTuner
from ._targets import RegressionTargetsMixin


class FineTunerRegressor(RegressionTargetsMixin, RegressorMixin, BaseFineTuner):
    """Fine-tune the top of a convnet for numeric targets: FineTuner with a linear output.

    The recipe of :class:`FineTuner` (the book's §5.3.2): the convolutional base, then
    Flatten → Dense(relu) → Dropout → ``Dense(n_targets)`` with no activation, trained
    on the mean squared error; phase 1 trains the head on the frozen base, phase 2
    the top ``unfreeze`` stages with it at a very low learning rate. Without
    augmentation the frozen prefix's output is cached, as for :class:`FineTuner`.

    ``y`` is standardized inside ``fit`` (each column to mean 0 and standard
    deviation 1) and predictions are mapped back to the units of ``y``, so the
    default learning rates (1e-4, then 1e-5) work on raw targets such as ages in
    years or prices.

    Parameters
    ----------
    backbone : str or keras.Model, default="vgg16"
        As for :class:`FineTuner`.
    weights : "imagenet", None or path, default="imagenet"
        As for :class:`FineTuner`; None draws random weights from ``random_state``.
    unfreeze : int or "auto", default="auto"
        Stages trained in phase 2, counted from the top; 0 skips phase 2. ``"auto"``
        as for :class:`FineTuner`, with Ridge probes scored by R².
    image_size : (int, int), int or None, default=(150, 150)
        (height, width) every image is resized to; None is the network's native size.
    preprocessing : str, default="auto"
        As for :class:`FineTuner`.
    pooling : {"auto", "flatten", "avg"}, default="auto"
        How the head makes one vector of the base's output, as for
        :class:`FineTuner`.
    hidden_units : int, default=256
        Units of the head's hidden Dense layer.
    dropout : float, default=0.5
        Dropout rate before the output layer.
    augment : {"auto", "cached", "flip", "dihedral"}, bool or dict, default="auto"
        Augmentation while training, as for :class:`FineTuner`: symmetries and
        shifts of the cached maps, or image-space augmentation (which disables the
        cache).
    optimizer : {"adamw", "rmsprop", "adam", "sgd", "nadam", "adagrad"}, \
            default="adamw"
        Keras optimizer of both phases, built anew for each.
    head_epochs : int, default=30
        Epochs of phase 1.
    head_learning_rate : float or "auto", default="auto"
        Peak learning rate of phase 1; ``"auto"`` as for :class:`FineTuner`.
    fine_tune_epochs : int, default=10
        Epochs of phase 2.
    fine_tune_learning_rate : float or "auto", default="auto"
        Peak learning rate of phase 2; ``"auto"`` as for :class:`FineTuner`.
    batch_size : int, default=20
        Minibatch size of training and prediction.
    early_stopping : bool, default=False
        Stop each phase when the validation loss has not improved for
        ``n_iter_no_change`` epochs, and restore its best weights. Validation data is
        ``validation_data`` passed to ``fit``, or else ``validation_fraction`` of the
        training images, a shuffled split.
    validation_fraction : float, default=0.1
        Share of the training images held out when ``early_stopping`` is True and
        ``fit`` gets no ``validation_data``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    cache : {"auto", "memory", "disk"} or None, default="auto"
        Where the frozen-prefix outputs go, as for :class:`FineTuner`; None trains
        end to end.
    schedule : {"cosine", "constant"}, default="cosine"
        Learning rate over each phase, as for :class:`FineTuner`.
    warmup : float, default=0.1
        Share of each phase's steps spent warming up, with ``schedule="cosine"``.
    lr_mult : float, default=1.0
        Discriminative learning rates of the unfrozen stages, as for
        :class:`FineTuner`.
    gradual_unfreezing : bool, default=False
        Unfreeze one stage at a time in phase 2, as for :class:`FineTuner`.
    weight_decay : float, default=1e-4
        Decoupled weight decay of the optimizer; 0 is none.
    tta : {"flip", "dihedral"} or None, default=None
        ``"flip"`` averages the predictions for each image and its mirror,
        ``"dihedral"`` over the symmetries of the square, as for :class:`FineTuner`.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation (and random base weights), dropout, shuffling,
        augmentation and the validation split: an int gives the same predictions on
        the same CPU. Keras' global random state is never touched.
    verbose : int, default=0
        Keras progress bars when > 0 (2: one line per epoch).

    Attributes
    ----------
    y_mean_ : float or ndarray of shape (n_targets,)
        Mean of ``y`` (of each column for 2-D ``y``), subtracted before training.
    y_scale_ : float or ndarray of shape (n_targets,)
        Standard deviation of ``y`` (of each column), by which the centred targets
        are divided before training; 1 for a constant target.
    model_ : keras.Model
        The full network, images in [0, 255] → standardized targets
        ``(y - y_mean_) / y_scale_``: an ``"augmentation"`` block (with
        ``augment``), a ``"preprocessing"`` layer, the nested base and the head.
    image_size_ : tuple of int
        (height, width) images are resized to.
    preprocessing_ : str
        The preprocessing applied (what ``"auto"`` stands for).
    history_ : dict of str to list
        Per-epoch ``loss`` (and ``val_loss``) over both phases: the mean squared
        error of the standardized targets, so 1.0 is what always predicting the mean
        scores; ``phase`` (1 or 2) and ``epoch_seconds`` of each epoch.
    fine_tune_start_ : int
        Index in ``history_`` of the first epoch of phase 2.
    cache_ : {"memory", "disk"} or None
        Where the frozen-prefix cache was kept in this fit, None if not used.
    unfreeze_, head_learning_rate_, fine_tune_learning_rate_, pooling_, augment_
        The settings that ran: what ``"auto"`` decided from ``auto_probe_`` (a dict
        of Ridge probes' R² as :class:`FineTuner` has of accuracies, or None), or
        the parameters as given.
    auto_probe_ : dict or None
        See above.
    weights_sha256_ : str
        sha256 of the pretrained base's weights at the start of fit.

    See Also
    --------
    FineTuner : The same recipe for class labels.
    KerasMLPRegressor : The head alone, on precomputed features.

    Notes
    -----
    ``fit`` takes no ``sample_weight`` (minibatch training does not honour it as
    scikit-learn requires). Predictions are float64 and 1-D when ``y`` was 1-D.

    References
    ----------
    F. Chollet, *Deep Learning with Python*, Manning, 2017, §5.3.2.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convfeat import FineTunerRegressor
    >>> rng = np.random.default_rng(0)
    >>> brightness = rng.uniform(0, 255, size=8)
    >>> X = np.broadcast_to(brightness[:, None, None, None], (8, 32, 32, 3))
    >>> tuner = FineTunerRegressor(weights=None, image_size=32, head_epochs=2,
    ...                            fine_tune_epochs=1, batch_size=4, random_state=0)
    >>> tuner.fit(X, brightness).predict(X).shape
    (8,)
    >>> tuner.history_["phase"]
    [1, 1, 2]
    """

    # FineTuner's parameters but those of class labels, whatever FineTuner gains.
    _parameter_constraints = {
        name: constraint
        for name, constraint in FineTuner._parameter_constraints.items()
        if name not in ("class_weight", "label_smoothing")
    }
    label_smoothing = 0.0  # read by the shared training code; no labels to smooth

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
        cache="auto",
        schedule="cosine",
        warmup=0.1,
        lr_mult=1.0,
        gradual_unfreezing=False,
        weight_decay=1e-4,
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
        self.cache = cache
        self.schedule = schedule
        self.warmup = warmup
        self.lr_mult = lr_mult
        self.gradual_unfreezing = gradual_unfreezing
        self.weight_decay = weight_decay
        self.tta = tta
        self.random_state = random_state
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, validation_data=None):
        """Train the head (phase 1), then the top ``unfreeze`` blocks with it (phase 2).

        Parameters
        ----------
        X : array-like of shape (n_images, height, width[, channels]) or sequence of str
            Training images (pixel values in [0, 255]) or image file paths.
        y : array-like of shape (n_images,) or (n_images, n_targets)
            Numeric targets; standardized for training.
        validation_data : (X_val, y_val), default=None
            Images and targets (the shape of ``y``) to report ``val_loss`` on and,
            with ``early_stopping``, to stop on.

        Returns
        -------
        self : FineTunerRegressor
            The fitted regressor.
        """
        return self._fit(X, y, validation_data)

    def predict(self, X):
        """Predicted targets of each image, in the units of ``y``.

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths, as in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_images,) or (n_images, n_targets)
            Predictions as float64, 1-D when ``y`` was 1-D.
        """
        outputs = self._outputs(X)  # checks fitted before y_mean_ is read
        return self._predicted_targets(outputs)
