"""KerasMLPClassifier: the book's dense head as a scikit-learn classifier."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._compat import Interval, StrOptions, fit_context, validate_data
from ._keras_state import KerasModelState
from ._optimization import OPTIMIZERS, make_optimizer
from ._training import (
    check_two_classes,
    class_weight_vector,
    compile_for_training,
    custom_gradients_released,
    draw_seeds,
    early_stopping_callback,
    head_layers,
    hold_out_rows,
    probabilities,
    shuffled_batches,
    targets_and_loss,
)

# Rows per forward pass in predict_proba: bounds memory on large inputs.
_PREDICT_CHUNK = 4096

# Key under which a pickled estimator keeps its network as .keras bytes.


class KerasMLPClassifier(KerasModelState, ClassifierMixin, BaseEstimator):
    """A small Keras MLP classifier: the densely connected head on convnet features.

    The classifier of Chollet, *Deep Learning with Python* §5.3.1, trained on the
    features a frozen convolutional base extracted: ``Dense(hidden_units, "relu")``,
    ``Dropout(dropout)``, then ``Dense(1, "sigmoid")`` for two classes or
    ``Dense(n_classes, "softmax")`` for more, trained with minibatch gradient
    descent on the cross-entropy. The defaults are the book's recipe. Any 2-D
    numeric features work, typically those of
    :class:`~sklearn_convfeat.ConvFeatureExtractor` in a pipeline.

    A new network is built and trained from scratch at every ``fit``. Labels can
    be of any type (strings, ints, bools...).

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
        The split is stratified by class and drawn from ``random_state``.
    n_iter_no_change : int, default=5
        Epochs without improvement of the hold-out loss before stopping, when
        ``early_stopping`` is True.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, to counter imbalance. A dict maps
        labels of ``y``, as given (e.g. ``{"cat": 1, "dog": 3}``), to weights;
        missing classes weigh 1. ``"balanced"`` weighs each class by
        ``n_samples / (n_classes * n_samples_of_the_class)``. None weighs all
        samples equally.
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
        The class labels, sorted.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during ``fit``, when ``X`` has string column
        names (e.g. a pandas DataFrame).
    model_ : keras.Model
        The trained network; it outputs the probability of ``classes_[1]`` for
        two classes and of every class otherwise.
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
    """

    _parameter_constraints: dict = {
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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
        y : array-like of shape (n_samples,)
            Class labels, of any type; at least two classes.

        Returns
        -------
        self : KerasMLPClassifier
            The fitted estimator.
        """
        import keras

        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        check_two_classes(self, self.classes_)
        n_classes = len(self.classes_)
        class_weights = class_weight_vector(self.class_weight, self.classes_, y)
        sample_weight = None
        if class_weights is not None:
            sample_weight = class_weights[y_encoded].astype(np.float32)
        targets, loss = targets_and_loss(y_encoded, n_classes)
        hidden_seed, dropout_seed, output_seed, order_seed, split_seed = draw_seeds(
            self.random_state, 5
        )

        validation_data, callbacks, stopper = None, [], None
        if self.early_stopping:
            train, held_out = hold_out_rows(
                y_encoded, self.validation_fraction, split_seed, n_classes=n_classes
            )
            validation_data = (X[held_out], targets[held_out])
            if sample_weight is not None:
                validation_data += (sample_weight[held_out],)
                sample_weight = sample_weight[train]
            X, targets = X[train], targets[train]
            stopper = early_stopping_callback(self.n_iter_no_change, self.verbose)
            callbacks.append(stopper)

        self.model_ = keras.Sequential(
            [
                keras.Input(shape=(X.shape[1],), name="features"),
                *head_layers(
                    n_classes=n_classes,
                    hidden_units=self.hidden_units,
                    dropout=self.dropout,
                    seeds=(hidden_seed, dropout_seed, output_seed),
                ),
            ],
            name="mlp_head",
        )
        compile_for_training(
            self.model_, make_optimizer(self.optimizer, self.learning_rate), loss,
            X[:1], targets[:1],
        )
        batches = shuffled_batches(
            X, targets, sample_weight, batch_size=self.batch_size, seed=order_seed
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

    def predict_proba(self, X):
        """Probability of each class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; cast to float32.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``; rows sum to one. For two
            classes, ``[1 - p, p]`` where ``p`` is the network's output.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        # The head's arithmetic in float64 numpy rather than the float32 network:
        # float32 matrix kernels round a row differently depending on where it
        # falls in the batch, so probabilities would change with sample order.
        (kernel, bias), (out_kernel, out_bias) = (
            [weight.astype(np.float64) for weight in self.model_.get_layer(name).get_weights()]
            for name in ("hidden", "output")
        )
        outputs = []
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            rows = X[start : start + _PREDICT_CHUNK].astype(np.float64)
            hidden = np.maximum(rows @ kernel + bias, 0.0)
            logits = hidden @ out_kernel + out_bias
            outputs.append(_output_activation(logits))
        outputs = np.concatenate(outputs)
        return probabilities(outputs)

    def predict(self, X):
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            As for :meth:`predict_proba`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            The label of ``classes_`` with the highest probability.
        """
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Stated rather than inherited: dense finite input only, any number of
        # classes, and reproducible fits given an int random_state.
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = False
        return tags


def _output_activation(logits):
    """The head's sigmoid (one output) or softmax, in float64."""
    if logits.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)
