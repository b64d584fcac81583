"""FineTuner: the book's two-phase fine-tuning of VGG16 as a scikit-learn classifier.

Phase 1 trains the dense head on the frozen base; phase 2 unfreezes the top
``unfreeze`` blocks and trains them with the head at a very low learning rate.

Without augmentation the frozen lower blocks see the same images every epoch, so their
output is computed once (the frozen-prefix cache) and only the unfrozen top and the head
are trained on it: the same computation as end-to-end training, without repeating the
frozen forward pass every epoch.
"""

import os
import tempfile
from functools import lru_cache
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from ._backbone import N_BLOCKS, TensorFlowRunner, feature_map_shape, get_base
from ._images import ImageFiles, check_images, run_batches
from ._keras_state import model_from_bytes, model_to_bytes
from ._training import (
    OPTIMIZERS,
    check_two_classes,
    class_weight_vector,
    compile_for_training,
    draw_seeds,
    head_layers,
    hold_out_rows,
    make_optimizer,
    ordered_batches,
    probabilities,
    shuffled_batches,
    targets_and_loss,
)
from ._validation import BASE_PARAMETER_CONSTRAINTS, check_image_size
from ._weights import resolve_weights

# The book's ImageDataGenerator settings (§5.2.5), by their Keras 2 names.
AUGMENT_DEFAULTS = {
    "rotation_range": 40,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "horizontal_flip": True,
    "fill_mode": "nearest",
}
_FILL_MODES = ("reflect", "wrap", "nearest", "constant")
_MODEL_BYTES = "_model_keras_bytes"
_HEAD_LAYERS = ("flatten", "hidden", "dropout", "output")
# The frozen-prefix cache stays in memory while it takes at most this share of the
# memory available when fit starts; beyond it, it goes to a memory-mapped file.
_CACHE_MEMORY_SHARE = 0.5


class FineTuner(ClassifierMixin, BaseEstimator):
    """Fine-tune the top of VGG16 with a dense head: the book's §5.3.2 recipe.

    1. Build the VGG16 convolutional base + Flatten → Dense(relu) → Dropout →
       Dense(sigmoid for two classes, softmax for more).
    2. Phase 1: train the head with the whole base frozen.
    3. Phase 2: unfreeze the top ``unfreeze`` convolutional blocks and train them with
       the head at a very low learning rate.

    Without augmentation, the output of the frozen blocks is computed once per image
    and cached (``cache``), so each epoch only runs the unfrozen top and the head: the
    same training, several times faster per epoch on a CPU.

    Parameters
    ----------
    weights : "imagenet", None or path, default="imagenet"
        As for :class:`ConvFeatureExtractor`: Keras' ImageNet download (or the file in
        ``SKLEARN_CONVFEAT_WEIGHTS``), a local weights file, or None for random
        weights drawn from ``random_state``.
    unfreeze : int, default=1
        Convolutional blocks trained in phase 2, counted from the top: 1 is block5
        (the book's choice), 5 is the whole base; 0 keeps the base frozen and skips
        phase 2.
    image_size : (int, int) or int, default=(150, 150)
        (height, width) every image is resized to.
    preprocessing : {"vgg16", "rescale"}, default="vgg16"
        ``keras.applications.vgg16.preprocess_input`` (what the ImageNet weights
        expect) or the book's ``x / 255``.
    hidden_units : int, default=256
        Units of the head's hidden Dense layer.
    dropout : float, default=0.5
        Dropout rate before the output layer.
    augment : bool or dict, default=False
        True applies the book's augmentation while training (rotation 40°, width and
        height shift 0.2, shear 0.2, zoom 0.2, horizontal flip; Keras 3 preprocessing
        layers, inactive at prediction); a dict overrides single settings of
        ``AUGMENT_DEFAULTS`` (``rotation_range``, ``width_shift_range``,
        ``height_shift_range``, ``shear_range``, ``zoom_range``, ``horizontal_flip``,
        ``fill_mode``). Augmentation changes the images every epoch, so it disables
        the cache: expect each epoch to cost a full forward pass of the base.
    optimizer : {"rmsprop", "adam", "adamw", "sgd", "nadam", "adagrad"}, default="rmsprop"
        Keras optimizer of both phases, built anew for each.
    head_epochs : int, default=30
        Epochs of phase 1.
    head_learning_rate : float, default=2e-5
        Learning rate of phase 1 (the book's 2e-5).
    fine_tune_epochs : int, default=100
        Epochs of phase 2 (the book's 100; with the cache and early stopping, far
        fewer are usually needed).
    fine_tune_learning_rate : float, default=1e-5
        Learning rate of phase 2 (the book's 1e-5): small, so the pretrained
        features are adjusted rather than destroyed.
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
        either; None trains end to end. Ignored (end-to-end) with augmentation or
        ``unfreeze=5``, where nothing stays frozen.
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
        nested ``"vgg16"`` base, and the head. :func:`cam` explains it.
    history_ : dict of str to list
        Per-epoch ``loss``, ``accuracy`` (and ``val_*``) over both phases,
        ``phase`` (1 or 2) and ``epoch_seconds`` (wall time) of each epoch.
    fine_tune_start_ : int
        Index in ``history_`` of the first epoch of phase 2 (the number of phase-1
        epochs run).
    cache_ : {"memory", "disk"} or None
        Where the frozen-prefix cache was kept in this fit, None if not used.
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
                "weights",
                "image_size",
                "preprocessing",
                "batch_size",
                "verbose",
                "random_state",
            )
        },
        "unfreeze": [Interval(Integral, 0, N_BLOCKS, closed="both")],
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "augment": ["boolean", dict],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "head_epochs": [Interval(Integral, 0, None, closed="left")],
        "head_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "fine_tune_epochs": [Interval(Integral, 0, None, closed="left")],
        "fine_tune_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "cache": [StrOptions({"auto", "memory", "disk"}), None],
    }

    def __init__(
        self,
        *,
        weights="imagenet",
        unfreeze=1,
        image_size=(150, 150),
        preprocessing="vgg16",
        hidden_units=256,
        dropout=0.5,
        augment=False,
        optimizer="rmsprop",
        head_epochs=30,
        head_learning_rate=2e-5,
        fine_tune_epochs=100,
        fine_tune_learning_rate=1e-5,
        batch_size=20,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        cache="auto",
        random_state=None,
        verbose=0,
    ):
        self.weights = weights
        self.unfreeze = unfreeze
        self.image_size = image_size
        self.preprocessing = preprocessing
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
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, validation_data=None):
        """Train the head (phase 1), then the top ``unfreeze`` blocks with it (phase 2).

        Parameters
        ----------
        X : array-like of shape (n_images, height, width[, channels]) or sequence of str
            Training images (pixel values in [0, 255]) or image file paths; paths are
            decoded batch by batch, so memory is bounded by the batch.
        y : array-like of shape (n_images,)
            Class labels of any type; at least two classes.
        validation_data : (X_val, y_val), default=None
            Images and labels to report ``val_*`` metrics on and, with
            ``early_stopping``, to stop on.

        Returns
        -------
        self : FineTuner
            The fitted classifier.
        """
        if isinstance(self.unfreeze, bool):
            raise ValueError(
                "The 'unfreeze' parameter of FineTuner must be an int in the range "
                f"[0, {N_BLOCKS}] (blocks trained in phase 2). Got {self.unfreeze!r}."
            )
        augment = _check_augment(self.augment)
        images = check_images(X)
        y = column_or_1d(y, warn=True)
        check_consistent_length(images, y)
        check_classification_targets(y)
        if isinstance(images, ImageFiles):
            images.check_exist()
        self.image_size_ = check_image_size(self.image_size, "block5_pool")
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        check_two_classes(self, self.classes_)
        n_classes = len(self.classes_)
        weights_seed, head_seeds, augment_seed, order_seed, split_seed = _split_seeds(
            draw_seeds(self.random_state, 7)
        )

        source = resolve_weights(self.weights, weights_seed)
        base_entry = get_base(source)
        self.weights_sha256_ = base_entry.sha256

        train_rows = np.arange(len(y))
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_data
            val_images = check_images(X_val, input_name="X_val")
            y_val = column_or_1d(y_val)
            check_consistent_length(val_images, y_val)
            unknown = np.setdiff1d(y_val, self.classes_)
            if len(unknown):
                raise ValueError(
                    f"validation_data has labels {unknown.tolist()!r} that are not in "
                    f"y; the classes are {self.classes_.tolist()!r}."
                )
            validation = (val_images, np.searchsorted(self.classes_, y_val))
        elif self.early_stopping:
            train_rows, val_rows = hold_out_rows(
                y_encoded, self.validation_fraction, split_seed, n_classes=n_classes
            )
            validation = (images.subset(val_rows), y_encoded[val_rows])

        class_weights = class_weight_vector(self.class_weight, self.classes_, y)
        sample_weight = None
        if class_weights is not None:
            sample_weight = class_weights[y_encoded[train_rows]].astype(np.float32)
        targets, loss = targets_and_loss(y_encoded[train_rows], n_classes)
        train_images = images if len(train_rows) == len(y) else images.subset(train_rows)
        if validation is not None:
            validation = (validation[0], targets_and_loss(validation[1], n_classes)[0])

        self.model_ = self._build_network(
            base_entry.model.get_weights(), n_classes, head_seeds, augment, augment_seed
        )
        cut = _cache_cut(self.unfreeze)
        use_cache = self.cache is not None and not augment and cut is not None
        trainer = _CachedTraining if use_cache else _EndToEndTraining
        training = trainer(self, source, cut, loss, order_seed)
        history = training.run(train_images, targets, sample_weight, validation)
        self.cache_ = training.cache_kind
        self.history_ = history
        self.fine_tune_start_ = history["phase"].count(1)
        return self

    def predict_proba(self, X):
        """Probability of each class of ``classes_`` for each image.

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths, as in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        check_is_fitted(self)
        outputs, _ = run_batches(
            self.model_.predict_on_batch,
            check_images(X),
            n_outputs=1 if len(self.classes_) == 2 else len(self.classes_),
            image_size=self.image_size_,
            batch_size=self.batch_size,
        )
        return probabilities(outputs)

    def predict(self, X):
        """Most probable class of each image.

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths.

        Returns
        -------
        y_pred : ndarray of shape (n_images,)
        """
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_function(self, X):
        """Log-odds of the second class (binary) or log-probabilities (multi-class).

        Parameters
        ----------
        X : array-like of images or sequence of str
            Images or image file paths.

        Returns
        -------
        scores : ndarray of shape (n_images,) or (n_images, n_classes)
        """
        proba = np.clip(self.predict_proba(X), 1e-12, 1.0)
        if proba.shape[1] == 2:
            return np.log(proba[:, 1]) - np.log(proba[:, 0])
        return np.log(proba)

    def _build_network(self, base_weights, n_classes, head_seeds, augment, augment_seed):
        import keras

        height, width = self.image_size_
        inputs = keras.Input((height, width, 3), name="image")
        x = inputs
        if augment:
            x = _augmentation(augment, augment_seed)(x)
        x = _preprocessing_layer_class()(self.preprocessing, name="preprocessing")(x)
        base = keras.applications.VGG16(
            weights=None, include_top=False, input_shape=(height, width, 3)
        )
        base.set_weights(base_weights)
        x = base(x)
        x = keras.layers.Flatten(name="flatten")(x)
        for layer in head_layers(
            n_classes=n_classes,
            hidden_units=self.hidden_units,
            dropout=self.dropout,
            seeds=head_seeds,
        ):
            x = layer(x)
        return keras.Model(inputs, x, name="finetuner")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        if "model_" in state:
            state[_MODEL_BYTES] = model_to_bytes(state.pop("model_"))
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop(_MODEL_BYTES, None)
        super().__setstate__(state)
        if data is not None:
            _preprocessing_layer_class()  # registers the layer before loading
            self.model_ = model_from_bytes(data)


class _Training:
    """One fit's two phases; subclasses say what each phase trains on."""

    cache_kind = None

    def __init__(self, tuner, source, cut, loss, order_seed):
        self.tuner = tuner
        self.source = source
        self.cut = cut
        self.loss = loss
        self.order_seed = order_seed
        self.history = {"phase": []}
        self.base = tuner.model_.get_layer("vgg16")

    def run(self, images, targets, sample_weight, validation):
        tuner = self.tuner
        phase1_model, phase1_inputs, phase1_validation = self.phase1(images, validation)
        _set_trainable_blocks(self.base, 0)
        self.fit_phase(
            1, phase1_model, phase1_inputs, targets, sample_weight, phase1_validation,
            tuner.head_epochs, tuner.head_learning_rate,
        )
        if tuner.unfreeze > 0 and tuner.fine_tune_epochs > 0:
            phase2_model, phase2_inputs, phase2_validation = self.phase2()
            _set_trainable_blocks(self.base, tuner.unfreeze)
            self.fit_phase(
                2, phase2_model, phase2_inputs, targets, sample_weight,
                phase2_validation, tuner.fine_tune_epochs, tuner.fine_tune_learning_rate,
            )
        self.cleanup()
        _set_trainable_blocks(self.base, tuner.unfreeze)
        return self.history

    def fit_phase(self, phase, model, inputs, targets, sample_weight, validation,
                  epochs, learning_rate):
        import keras

        if epochs == 0:
            return
        tuner = self.tuner
        first = np.arange(1)
        compile_for_training(
            model, make_optimizer(tuner.optimizer, learning_rate), self.loss,
            inputs[first], targets[first],
        )
        timer = _epoch_timer()
        callbacks = [timer]
        if tuner.early_stopping and validation is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss",
                    patience=tuner.n_iter_no_change,
                    restore_best_weights=True,
                    verbose=int(tuner.verbose > 0),
                )
            )
        batches = shuffled_batches(
            inputs, targets, sample_weight,
            batch_size=tuner.batch_size, seed=self.order_seed + phase,
        )
        validation_batches = None
        if validation is not None:
            validation_batches = ordered_batches(*validation, batch_size=tuner.batch_size)
        history = model.fit(
            batches,
            epochs=epochs,
            steps_per_epoch=batches.n_batches_per_epoch,
            shuffle=False,
            validation_data=validation_batches,
            callbacks=callbacks,
            verbose=min(int(tuner.verbose), 2),
        )
        for key, values in history.history.items():
            self.history.setdefault(key, []).extend(float(v) for v in values)
        self.history["phase"].extend([phase] * len(history.history["loss"]))
        self.history.setdefault("epoch_seconds", []).extend(timer.seconds)

    def cleanup(self):
        pass


class _EndToEndTraining(_Training):
    """Every epoch runs the whole network on the (augmented) images."""

    def phase1(self, images, validation):
        size = self.tuner.image_size_
        self.images = images.as_rows(size)
        self.validation = None
        if validation is not None:
            self.validation = (validation[0].as_rows(size), validation[1])
        return self.tuner.model_, self.images, self.validation

    def phase2(self):
        return self.tuner.model_, self.images, self.validation


class _CachedTraining(_Training):
    """The frozen prefix runs once per image; epochs train the top and the head."""

    def phase1(self, images, validation):
        import keras

        tuner = self.tuner
        self.map_shape = feature_map_shape(self.cut, tuner.image_size_)
        self._folder = None
        n_val = 0 if validation is None else len(validation[0])
        self.cache_kind = self._choose_cache(len(images) + n_val)
        self.prefix = self._extract(images, "train")
        self.prefix_validation = None
        if validation is not None:
            self.prefix_validation = (self._extract(validation[0], "validation"), validation[1])

        # The base's layers above the cut and the head, reused on cached inputs:
        # training these shared layers trains model_ itself.
        cut_index = [layer.name for layer in self.base.layers].index(self.cut)
        self.upper_layers = self.base.layers[cut_index + 1 :]
        head = [tuner.model_.get_layer(name) for name in _HEAD_LAYERS]
        prefix_input = keras.Input(self.map_shape, name="frozen_prefix")
        x = prefix_input
        for layer in self.upper_layers:
            x = layer(x)
        base_output = x
        for layer in head:
            x = layer(x)
        self.top = keras.Model(prefix_input, x, name="finetuner_top")

        # Phase 1 trains the head only: run the frozen upper blocks once more, here.
        upper = keras.Model(prefix_input, base_output)
        head_input = keras.Input(tuple(base_output.shape[1:]), name="base_output")
        x = head_input
        for layer in head:
            x = layer(x)
        head_model = keras.Model(head_input, x, name="finetuner_head")
        if not self.upper_layers:
            return head_model, self.prefix, self.prefix_validation
        features = self._apply(upper, self.prefix)
        features_validation = None
        if validation is not None:
            features_validation = (self._apply(upper, self.prefix_validation[0]),
                                   validation[1])
        return head_model, features, features_validation

    def phase2(self):
        return self.top, self.prefix, self.prefix_validation

    def _choose_cache(self, n_images):
        if self.tuner.cache in ("memory", "disk"):
            return self.tuner.cache
        needed = n_images * int(np.prod(self.map_shape)) * 4
        return "memory" if needed <= _CACHE_MEMORY_SHARE * _available_memory() else "disk"

    def _extract(self, images, name):
        tuner = self.tuner
        n_values = int(np.prod(self.map_shape))
        out = None
        if self.cache_kind == "disk":
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="sklearn_convfeat_cache_")
            out = np.lib.format.open_memmap(
                os.path.join(self._folder.name, f"{name}.npy"),
                mode="w+", dtype=np.float32, shape=(len(images), n_values),
            )
        runner = TensorFlowRunner(self.source, self.cut, tuner.preprocessing)
        values, _ = run_batches(
            lambda batch: runner.features(batch, "flatten"), images,
            n_outputs=n_values, image_size=tuner.image_size_,
            batch_size=max(tuner.batch_size, 32), verbose=tuner.verbose, out=out,
        )
        return values.reshape(len(images), *self.map_shape)

    def _apply(self, model, inputs, chunk=256):
        outputs = [
            np.asarray(model.predict_on_batch(inputs[start : start + chunk]))
            for start in range(0, len(inputs), chunk)
        ]
        return np.concatenate(outputs)

    def cleanup(self):
        self.prefix = self.prefix_validation = None
        if self._folder is not None:
            self._folder.cleanup()


def _epoch_timer():
    import time

    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each epoch, validation included."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _cache_cut(unfreeze):
    """The last frozen layer in phase 2, whose output is cached; None if none is."""
    if unfreeze >= N_BLOCKS:
        return None
    return f"block{N_BLOCKS - unfreeze}_pool"


def _block_of(layer_name):
    return int(layer_name[5]) if layer_name.startswith("block") else 0


def _set_trainable_blocks(base, n_blocks):
    """Make the top ``n_blocks`` blocks of the base trainable, freeze the rest."""
    base.trainable = True
    for layer in base.layers:
        layer.trainable = _block_of(layer.name) > N_BLOCKS - n_blocks


def _split_seeds(seeds):
    weights_seed, h1, h2, h3, augment_seed, order_seed, split_seed = seeds
    return weights_seed, (h1, h2, h3), augment_seed, order_seed, split_seed


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return 2**31


def _check_augment(augment):
    """The augmentation settings as a dict, or None when off."""
    if augment is False:
        return None
    if augment is True:
        return dict(AUGMENT_DEFAULTS)
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"`augment` has unknown keys {unknown}. Valid keys are "
            f"{sorted(AUGMENT_DEFAULTS)} (the book's ImageDataGenerator settings); "
            "e.g. augment={'rotation_range': 20}."
        )
    settings = {**AUGMENT_DEFAULTS, **augment}
    if settings["fill_mode"] not in _FILL_MODES:
        raise ValueError(
            f"`augment['fill_mode']` must be one of {_FILL_MODES}. "
            f"Got {settings['fill_mode']!r} instead."
        )
    for key in ("rotation_range", "width_shift_range", "height_shift_range",
                "shear_range", "zoom_range"):
        value = settings[key]
        if not isinstance(value, Real) or isinstance(value, bool) or value < 0:
            raise ValueError(
                f"`augment[{key!r}]` must be a number >= 0 (0 turns it off). "
                f"Got {value!r} instead."
            )
    return settings


def _augmentation(settings, seed):
    """The book's ImageDataGenerator as Keras 3 layers (active in training only)."""
    import keras

    layers = keras.layers
    fill = settings["fill_mode"]
    steps = []
    if settings["rotation_range"]:
        steps.append(layers.RandomRotation(
            settings["rotation_range"] / 360.0, fill_mode=fill, seed=seed))
    if settings["width_shift_range"] or settings["height_shift_range"]:
        steps.append(layers.RandomTranslation(
            settings["height_shift_range"], settings["width_shift_range"],
            fill_mode=fill, seed=seed + 1))
    if settings["shear_range"]:
        steps.append(layers.RandomShear(
            x_factor=settings["shear_range"], fill_mode=fill, seed=seed + 2))
    if settings["zoom_range"]:
        steps.append(layers.RandomZoom(settings["zoom_range"], fill_mode=fill, seed=seed + 3))
    if settings["horizontal_flip"]:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(steps, name="augmentation")


@lru_cache(maxsize=None)
def _preprocessing_layer_class():
    """The VGG16 input scaling as a serialisable layer (registered on first use)."""
    import keras

    from ._backbone import preprocess

    @keras.saving.register_keras_serializable(package="sklearn_convfeat")
    class VGGPreprocessing(keras.layers.Layer):
        """RGB images in [0, 255] → the base's input: ``"vgg16"`` or ``"rescale"``."""

        def __init__(self, mode="vgg16", **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, images):
            return preprocess(images, self.mode)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return VGGPreprocessing
