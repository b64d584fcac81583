"""KerasMLPClassifier: the book's dense head as a scikit-learn classifier, and the
training it shares with KerasMLPRegressor."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._compat import Interval, StrOptions, fit_context, validate_data
from ._keras_state import KerasModelState
from ._optimization import OPTIMIZERS, make_optimizer
from ._targets import ClassTargetsMixin
from ._training import (
    compile_for_training,
    custom_gradients_released,
    draw_seeds,
    early_stopping_callback,
    head_layers,
    hold_out_rows,
    shuffled_batches,
)

# Rows per forward pass in predict: bounds memory on large inputs.
_PREDICT_CHUNK = 4096

# The parameters every Keras MLP takes; the classifier adds class_weight.
MLP_PARAMETER_CONSTRAINTS: dict = {
    "hidden_units": [Interval(Integral, 1, None, closed="left")],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS))],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


class BaseKerasMLP(KerasModelState, BaseEstimator):
    """The book's dense head trained on 2-D features; subclasses say what it predicts.

    Subclasses implement ``_targets_from_y(y)`` (returning a ``_targets`` object and
    the encoded y, and setting their fitted target attributes) and
    ``_sample_weight(targets, y_encoded)``.
    """

    def _fit(self, X, y):
        import keras

        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True)
        targets, y_encoded = self._targets_from_y(y)
        sample_weight = self._sample_weight(targets, y_encoded)
        keras_targets = targets.keras(y_encoded)
        hidden_seed, dropout_seed, output_seed, order_seed, split_seed = draw_seeds(
            self.random_state, 5
        )

        validation_data, callbacks, stopper = None, [], None
        if self.early_stopping:
            train, held_out = hold_out_rows(
                len(X), self.validation_fraction, split_seed,
                stratify=targets.stratify(y_encoded),
            )
            validation_data = (X[held_out], keras_targets[held_out])
            if sample_weight is not None:
                validation_data += (sample_weight[held_out],)
                sample_weight = sample_weight[train]
            X, keras_targets = X[train], keras_targets[train]
            stopper = early_stopping_callback(self.n_iter_no_change, self.verbose)
            callbacks.append(stopper)

        self.model_ = keras.Sequential(
            [
                keras.Input(shape=(X.shape[1],), name="features"),
                *head_layers(
                    n_outputs=targets.n_outputs,
                    activation=targets.activation,
                    hidden_units=self.hidden_units,
                    dropout=self.dropout,
                    seeds=(hidden_seed, dropout_seed, output_seed),
                ),
            ],
            name="mlp_head",
        )
        compile_for_training(
            self.model_, make_optimizer(self.optimizer, self.learning_rate),
            targets.loss, X[:1], keras_targets[:1],
        )
        batches = shuffled_batches(
            X, keras_targets, sample_weight, batch_size=self.batch_size, seed=order_seed
        )
        with custom_gradients_released():
            history = self.model_.fit(
                batches,
                epochs=self.epochs,
                steps_per_epoch=batches.n_batches_per_epoch,
                # The order comes from `batches`, seeded from random_state.
                shuffle=False,
                validation_data=validation_data,
                callbacks=callbacks,
                verbose=min(int(self.verbose), 2),
            )
        self.history_ = {
            key: [float(value) for value in values]
            for key, values in history.history.items()
        }
        self.n_iter_ = len(self.history_["loss"])
        if stopper is not None and stopper.best_weights is not None:
            self.best_epoch_ = stopper.best_epoch + 1
        else:
            self.best_epoch_ = self.n_iter_
        return self

    def _outputs(self, X):
        """The network's outputs on ``X``, computed in float64."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        # The head's arithmetic in float64 numpy rather than the float32 network:
        # float32 matrix kernels round a row differently depending on where it
        # falls in the batch, so outputs would change with sample order.
        (kernel, bias), (out_kernel, out_bias) = (
            [weight.astype(np.float64) for weight in self.model_.get_layer(name).get_weights()]
            for name in ("hidden", "output")
        )
        activation = self.model_.get_layer("output").get_config()["activation"]
        outputs = []
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            rows = X[start : start + _PREDICT_CHUNK].astype(np.float64)
            hidden = np.maximum(rows @ kernel + bias, 0.0)
            outputs.append(_ACTIVATIONS[activation](hidden @ out_kernel + out_bias))
        return np.concatenate(outputs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Stated rather than inherited: dense finite input only, and reproducible
        # fits given an int random_state.
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


class KerasMLPClassifier(ClassTargetsMixin, ClassifierMixin, BaseKerasMLP):
    """A small Keras MLP classifier: the densely connected head on convnet features.

    The classifier of Chollet, *Deep Learning with Python* §5.3.1, trained on the
    features a frozen convolutional base extracted: ``Dense(hidden_units, "relu")``,
    ``Dropout(dropout)``, then ``Dense(1, "sigmoid")`` for two classes or
    ``Dense(n_classes, "softmax")`` for more, trained with minibatch gradient
    descent on the cross-entropy. The defaults are the book's recipe. Any 2-D
    numeric features work, typically those of
    :class:`~sklearn_convfeat.ConvFeatureExtractor` in a pipeline.

    A new network is built and trained from scratch at every ``fit``. Labels can
    be of any type (strings, ints, bools...). Multi-label ``y``, a 2-D 0/1
    indicator matrix with one column per label, gets one sigmoid output per label
    trained on the binary cross-entropy, as in
    :class:`~sklearn.neural_network.MLPClassifier`.

    Parameters
    ----------
    hidden_units : int, default=256
        Units of the hidden ReLU layer.
    dropout : float, default=0.5
        Fraction of the hidden units dropped at each training step, in [0, 1).
    optimizer : {"rmsprop", "adam", "adamw", "sgd", "nadam", "adagrad"}, \
            default="rmsprop"
        Keras optimizer, built fresh at every ``fit``.
    learning_rate : float, default=2e-5
        Step size of the optimizer. The book's 2e-5 suits 8192 VGG16 features
        over 30 epochs; small or standardized inputs usually want about 1e-3.
    epochs : int, default=30
        Passes over the training data (the most, with ``early_stopping``).
    batch_size : int, default=20
        Samples per gradient step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when the loss
        on it has not improved for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch. The hold-out loss is weighted like the
        training loss by ``class_weight``.
    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` is True.
        The split is stratified by class (a plain shuffled split for multi-label
        ``y``) and drawn from ``random_state``.
    n_iter_no_change : int, default=5
        Epochs without improvement of the hold-out loss before stopping, when
        ``early_stopping`` is True.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, to counter imbalance. A dict maps
        labels of ``y``, as given (e.g. ``{"cat": 1, "dog": 3}``), to weights;
        missing classes weigh 1. ``"balanced"`` weighs each class by
        ``n_samples / (n_classes * n_samples_of_the_class)``. None weighs all
        samples equally. Not supported with multi-label ``y`` (an error).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the dropout masks, the order of the samples
        in each epoch and the early-stopping split. An int makes ``fit``
        reproducible: the same data gives bit-identical predictions on CPU.
        No global seed (NumPy, TensorFlow or Keras) is set or used.
    verbose : int, default=0
        Keras' training output: 0 is silent, 1 a progress bar per epoch, 2 one
        line per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; ``arange(n_labels)`` for multi-label ``y``.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during ``fit``, when ``X`` has string column
        names (e.g. a pandas DataFrame).
    model_ : keras.Model
        The trained network; it outputs the probability of ``classes_[1]`` for
        two classes, of every class for more, and of every label for
        multi-label ``y``.
    history_ : dict of str to list of float
        Per-epoch ``loss`` and ``accuracy`` on the training data, plus
        ``val_loss`` and ``val_accuracy`` on the hold-out with
        ``early_stopping``, as in Keras' ``History``.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        The epoch, counted from 1, whose weights ``model_`` holds: the one with
        the lowest hold-out loss with ``early_stopping``, else the last one.

    See Also
    --------
    sklearn_convfeat.ConvFeatureExtractor : The features this head is made for.
    KerasMLPRegressor : The same head for numeric targets.
    sklearn.neural_network.MLPClassifier : The MLP of scikit-learn; no dropout,
        no GPU.
    sklearn.linear_model.LogisticRegression : A strong, faster baseline on
        convnet features.

    Notes
    -----
    ``fit`` takes no ``sample_weight``: with minibatch stochastic training a
    sample of weight 2 is not equivalent to a repeated sample, which
    scikit-learn requires of ``sample_weight``. Use ``class_weight`` to counter
    class imbalance.

    Training runs in float32: ``X`` is cast to it.

    Pickling (``pickle``, ``joblib``) stores ``model_`` as a native ``.keras``
    archive, so a reloaded estimator predicts bit-identically.

    References
    ----------
    .. [1] F. Chollet, *Deep Learning with Python*, Manning, 2017, §5.3.1
       "Feature extraction": the densely connected classifier trained on the
       features of the VGG16 convolutional base.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn_convfeat import KerasMLPClassifier
    >>> X, y = make_classification(n_samples=100, n_features=20, random_state=0)
    >>> clf = KerasMLPClassifier(hidden_units=16, learning_rate=1e-2, epochs=5,
    ...                          random_state=0)
    >>> clf.fit(X, y)
    KerasMLPClassifier(epochs=5, hidden_units=16, learning_rate=0.01,
                       random_state=0)
    >>> clf.classes_
    array([0, 1])
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    >>> clf.n_iter_
    5

    Multi-label: one 0/1 column per label, and the probability of each.

    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> clf.fit(X, Y).classes_
    array([0, 1])
    >>> clf.predict(X[:3]).shape, clf.predict_proba(X[:3]).shape
    ((3, 2), (3, 2))
    """

    _parameter_constraints: dict = {
        **MLP_PARAMETER_CONSTRAINTS,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        *,
        hidden_units=256,
        dropout=0.5,
        optimizer="rmsprop",
        learning_rate=2e-5,
        epochs=30,
        batch_size=20,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        random_state=None,
        verbose=0,
    ):
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.random_state = random_state
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Build the network and train it on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features; cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, of any type, at least two classes; or, for multi-label
            classification, a 0/1 indicator matrix with one column per label.

        Returns
        -------
        self : KerasMLPClassifier
            The fitted estimator.
        """
        return self._fit(X, y)

    def predict_proba(self, X):
        """Probability of each class, or of each label being 1 (multi-label).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; cast to float32.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``; rows sum to one. For two
            classes, ``[1 - p, p]`` where ``p`` is the network's output. For
            multi-label ``y``, column ``k`` is the probability that label ``k``
            is 1 (rows need not sum to one).
        """
        outputs = self._outputs(X)  # checks fitted before the targets are read
        return self._targets().probabilities(outputs)

    def predict(self, X):
        """Most probable class of each sample, or its 0/1 labels (multi-label).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            As for :meth:`predict_proba`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_labels)
            The label of ``classes_`` with the highest probability; for
            multi-label ``y``, the indicator of the labels whose probability
            exceeds 0.5.
        """
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self._targets().predict(proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = True
        return tags


def _sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-logits))


def _softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


# The output layer's activations, in float64.
_ACTIVATIONS = {"sigmoid": _sigmoid, "softmax": _softmax, "linear": lambda x: x}
