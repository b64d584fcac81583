"""KerasMLPRegressor: the book's dense head with a linear output, for numeric targets."""

from sklearn.base import RegressorMixin

from ._compat import fit_context
from ._mlp import MLP_PARAMETER_CONSTRAINTS, BaseKerasMLP
from ._targets import RegressionTargetsMixin


class KerasMLPRegressor(RegressionTargetsMixin, RegressorMixin, BaseKerasMLP):
    """A small Keras MLP regressor: the dense head on convnet features, linear output.

    The network of :class:`KerasMLPClassifier`, ``Dense(hidden_units, "relu")`` then
    ``Dropout(dropout)``, ending in ``Dense(n_targets)`` with no activation and
    trained on the mean squared error. ``y`` is standardized inside ``fit`` (each
    column to mean 0 and standard deviation 1) and predictions are mapped back to
    the units of ``y``, so the same learning rates work whatever the scale of the
    targets. Any 2-D numeric features work, typically those of
    :class:`~sklearn_convfeat.ConvFeatureExtractor` in a pipeline.

    A new network is built and trained from scratch at every ``fit``.

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
        Step size of the optimizer, as for :class:`KerasMLPClassifier`: 2e-5 suits
        8192 VGG16 features over 30 epochs; small or standardized inputs usually
        want about 1e-3. The targets are standardized, so their scale does not
        change it.
    epochs : int, default=30
        Passes over the training data (the most, with ``early_stopping``).
    batch_size : int, default=20
        Samples per gradient step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when the loss
        on it has not improved for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch.
    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` is True,
        a shuffled split drawn from ``random_state``.
    n_iter_no_change : int, default=5
        Epochs without improvement of the hold-out loss before stopping, when
        ``early_stopping`` is True.
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
    y_mean_ : float or ndarray of shape (n_targets,)
        Mean of ``y`` (of each column for 2-D ``y``), subtracted before training.
    y_scale_ : float or ndarray of shape (n_targets,)
        Standard deviation of ``y`` (of each column), by which the centred targets
        are divided before training; 1 for a constant target.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during ``fit``, when ``X`` has string column
        names (e.g. a pandas DataFrame).
    model_ : keras.Model
        The trained network; it outputs the standardized targets,
        ``(y - y_mean_) / y_scale_``.
    history_ : dict of str to list of float
        Per-epoch ``loss`` on the training data, plus ``val_loss`` on the hold-out
        with ``early_stopping``: the mean squared error of the standardized
        targets, so 1.0 is what always predicting the mean scores.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        The epoch, counted from 1, whose weights ``model_`` holds: the one with
        the lowest hold-out loss with ``early_stopping``, else the last one.

    See Also
    --------
    KerasMLPClassifier : The same head for class labels.
    FineTunerRegressor : Fine-tunes the convnet itself for numeric targets.
    sklearn.neural_network.MLPRegressor : The MLP of scikit-learn; no dropout,
        no GPU, no target scaling.

    Notes
    -----
    Why standardize ``y``: the initial weights make outputs of order 1, and with the
    book's learning rate of 2e-5 a network needs thousands of steps to reach targets
    of order 100 (prices, ages in days...); the mean squared error of raw targets
    also scales the gradients by the square of their unit. Standardized, every
    target starts where the network can reach it, as
    :class:`~sklearn.compose.TransformedTargetRegressor` with a
    :class:`~sklearn.preprocessing.StandardScaler` would do. Predictions and
    :meth:`score` are in the units of ``y``.

    ``fit`` takes no ``sample_weight``: with minibatch stochastic training a
    sample of weight 2 is not equivalent to a repeated sample.

    Training runs in float32: ``X`` is cast to it; predictions are float64.

    Pickling (``pickle``, ``joblib``) stores ``model_`` as a native ``.keras``
    archive, so a reloaded estimator predicts bit-identically.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_regression
    >>> from sklearn_convfeat import KerasMLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0,
    ...                        random_state=0)
    >>> reg = KerasMLPRegressor(hidden_units=32, dropout=0.0, optimizer="adam",
    ...                         learning_rate=1e-2, epochs=30, random_state=0)
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.9
    True

    Several targets at once: ``y`` of shape (n_samples, n_targets).

    >>> reg.fit(X, np.column_stack([y, -2 * y])).predict(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {**MLP_PARAMETER_CONSTRAINTS}

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
        self.random_state = random_state
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Build the network and train it on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features; cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Numeric targets; standardized for training.

        Returns
        -------
        self : KerasMLPRegressor
            The fitted estimator.
        """
        return self._fit(X, y)

    def predict(self, X):
        """Predicted targets, in the units of ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; cast to float32.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions as float64, 1-D when ``y`` was 1-D.
        """
        outputs = self._outputs(X)  # checks fitted before y_mean_ is read
        return self._predicted_targets(outputs)
