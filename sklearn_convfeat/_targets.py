"""What the Keras estimators learn to predict: labels or numbers, and how they become
the network's output layer, loss and Keras targets, and come back from its outputs.

:class:`ClassTargets` covers binary, multi-class and multi-label (2-D 0/1 indicator)
labels; :class:`RegressionTargets` numeric targets, standardized for training. Both
are rebuilt from an estimator's plain fitted attributes at prediction time, so nothing
but arrays and strings is pickled.
"""

from numbers import Real

import numpy as np
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target

MULTILABEL = "multilabel-indicator"
CLASSIFICATION_TYPES = ("binary", "multiclass", MULTILABEL)
REGRESSION_LOSS = "mean_squared_error"
_SUPPORTED = (
    "binary or multi-class labels (1-D), or multi-label targets (a 2-D indicator "
    "matrix of 0/1, one column per label)"
)


class ClassTargets:
    """The labels of a classifier: ``target_type`` and ``classes`` (as ``classes_``).

    Labels are encoded as indices into ``classes`` (binary, multi-class) or kept as the
    0/1 indicator (multi-label, where ``classes`` is ``arange(n_labels)``).
    """

    def __init__(self, target_type, classes):
        self.target_type = target_type
        self.classes = classes

    @classmethod
    def from_y(cls, estimator, y):
        """(ClassTargets, encoded y) of the training labels ``y``; raises on bad ``y``."""
        y = _as_array(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        target_type = type_of_target(y, input_name="y")
        if target_type not in CLASSIFICATION_TYPES:
            raise ValueError(
                f"{type(estimator).__name__} supports {_SUPPORTED}. Got y of type "
                f"{target_type!r} with shape {y.shape}: "
                + (
                    "several multi-class outputs are not supported; fit one "
                    "estimator per column of y, or binarize the columns into a 0/1 "
                    "indicator."
                    if target_type == "multiclass-multioutput"
                    else "pass labels in one of the supported forms."
                )
            )
        if target_type == MULTILABEL:
            return cls(target_type, np.arange(y.shape[1])), _indicator(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(estimator).__name__} needs samples of at least 2 classes; y "
                f"contains only one class: {classes.tolist()[0]!r}."
            )
        return cls(target_type, classes), encoded

    @property
    def multilabel(self):
        return self.target_type == MULTILABEL

    @property
    def n_outputs(self):
        if self.multilabel or len(self.classes) > 2:
            return len(self.classes)
        return 1

    @property
    def activation(self):
        return "softmax" if self.target_type == "multiclass" else "sigmoid"

    @property
    def loss(self):
        if self.target_type == "multiclass":
            return "sparse_categorical_crossentropy"
        return "binary_crossentropy"

    def encode(self, y, name="y"):
        """Encoded labels of ``y`` (e.g. validation labels) in the training encoding."""
        y = _as_array(y)
        if self.multilabel:
            if y.ndim != 2 or y.shape[1] != len(self.classes) or not _is_indicator(y):
                raise ValueError(
                    f"{name} must be a 0/1 indicator matrix with {len(self.classes)} "
                    f"columns, like the multi-label y of fit. Got shape {y.shape}."
                )
            return _indicator(y)
        y = column_or_1d(y)
        unknown = np.setdiff1d(y, self.classes)
        if len(unknown):
            raise ValueError(
                f"{name} has labels {unknown.tolist()!r} that are not in y; the classes "
                f"are {self.classes.tolist()!r}."
            )
        return np.searchsorted(self.classes, y)

    def keras(self, encoded):
        """What Keras trains on: one 0/1 column per sigmoid, class indices for softmax."""
        if self.target_type == "multiclass":
            return encoded.astype(np.int32)
        return encoded.astype(np.float32).reshape(len(encoded), self.n_outputs)

    def stratify(self, encoded):
        """Labels a validation hold-out keeps in proportion; None for multi-label."""
        return None if self.multilabel else encoded

    def sample_weight(self, class_weight, y_encoded):
        """Per-sample float32 weights from a ``class_weight`` parameter, or None."""
        if class_weight is None:
            return None
        if self.multilabel:
            raise ValueError(
                f"class_weight={class_weight!r} is not supported with multi-label y "
                "(a 2-D indicator): a sample carries several labels, so no single "
                "class weight applies to it. Use class_weight=None."
            )
        weights = _class_weights(class_weight, self.classes, self.classes[y_encoded])
        return weights[y_encoded].astype(np.float32)

    def probabilities(self, outputs):
        """predict_proba from the network's outputs: (n, n_classes), or for multi-label
        (n, n_labels) probabilities of each label being 1."""
        outputs = np.asarray(outputs, dtype=np.float64)
        if self.multilabel:
            return outputs
        if outputs.shape[1] == 1:
            return np.hstack([1.0 - outputs, outputs])
        return outputs / outputs.sum(axis=1, keepdims=True)  # float32 softmax drifts 1e-7

    def predict(self, proba):
        """Labels from probabilities: the most probable class, or each label > 0.5."""
        if self.multilabel:
            return (proba > 0.5).astype(self.classes.dtype)
        return self.classes[np.argmax(proba, axis=1)]

    def decision(self, proba):
        """Log-odds: of classes[1] (binary), of each label (multi-label); log-probabilities
        (multi-class). ``proba`` is clipped at 1e-12 first."""
        proba = np.clip(proba, 1e-12, 1.0)
        if self.multilabel:
            return np.log(proba) - np.log(np.clip(1.0 - proba, 1e-12, 1.0))
        if proba.shape[1] == 2:
            return np.log(proba[:, 1]) - np.log(proba[:, 0])
        return np.log(proba)


class RegressionTargets:
    """Numeric targets, learned standardized: ``(y - mean) / scale`` per column.

    ``mean`` and ``scale`` are floats for 1-D ``y``, arrays of shape (n_targets,)
    for 2-D ``y``, so predictions keep the shape of ``y``.
    """

    activation = "linear"
    loss = REGRESSION_LOSS

    def __init__(self, mean, scale):
        self.mean = mean
        self.scale = scale

    @classmethod
    def from_y(cls, estimator, y):
        """(RegressionTargets, y as float64) of the training targets ``y``."""
        y = _numeric(estimator, y, "y")
        scale = y.std(axis=0)
        # A constant target: only its mean is learnt (as in StandardScaler).
        scale = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)
        mean = y.mean(axis=0)
        if y.ndim == 1:
            mean, scale = float(mean), float(scale)
        return cls(mean, scale), y

    @property
    def n_outputs(self):
        return int(np.size(self.mean))

    def encode(self, y, name="y"):
        """``y`` (e.g. validation targets) checked against the shape of the training y."""
        y = _numeric(None, y, name)
        if y.shape[1:] != np.shape(self.mean):
            expected = "(n_samples,)" if np.ndim(self.mean) == 0 else (
                f"(n_samples, {self.n_outputs})"
            )
            raise ValueError(
                f"{name} must have the shape {expected} of the y given to fit; got "
                f"{y.shape}."
            )
        return y

    def keras(self, y):
        standardized = (y - self.mean) / self.scale
        return standardized.astype(np.float32).reshape(len(y), self.n_outputs)

    def stratify(self, y):
        return None

    def predict(self, outputs):
        """Predictions in the units of y from the network's standardized outputs."""
        outputs = np.asarray(outputs, dtype=np.float64)
        return outputs.reshape(len(outputs), *np.shape(self.mean)) * self.scale + self.mean


def training_metrics(loss):
    """The metrics Keras reports while training with ``loss``."""
    return [] if loss == REGRESSION_LOSS else ["accuracy"]


def _as_array(y):
    # Labels of any type; NaN labels are reported by type_of_target.
    return check_array(
        y, ensure_2d=False, dtype=None, ensure_all_finite=False, input_name="y"
    )


def _is_indicator(y):
    return set(np.unique(y).tolist()) <= {0, 1}


def _indicator(y):
    return np.asarray(y).astype(np.int8)


def _numeric(estimator, y, name):
    """``y`` as finite float64, 1-D or 2-D, with an error naming non-numeric values."""
    values = np.asarray(y)
    try:
        values.astype(np.float64)
    except (TypeError, ValueError):
        who = "Regression" if estimator is None else type(estimator).__name__
        examples = values.ravel()[:3].tolist()
        raise ValueError(
            f"{who} needs numeric targets: {name} has non-numeric values such as "
            f"{examples!r}. Convert {name} to numbers; for class labels use a "
            "classifier (KerasMLPClassifier, FineTuner)."
        ) from None
    return check_array(values, ensure_2d=False, dtype=np.float64, input_name=name)


def _class_weights(class_weight, classes, y):
    """Weight of each class of ``classes`` from a ``class_weight`` parameter.

    ``class_weight`` is ``"balanced"`` or a dict keyed by the labels of ``y`` as given
    (strings included); classes missing from the dict weigh 1.
    """
    if isinstance(class_weight, str):  # "balanced"
        return compute_class_weight("balanced", classes=classes, y=y)
    labels = classes.tolist()
    unknown = [label for label in class_weight if label not in labels]
    if unknown:
        example = dict(zip(labels, (1.0, 2.0)))
        raise ValueError(
            f"class_weight has keys {unknown!r} that are not classes of y; the "
            f"classes are {labels!r}. Key class_weight by the labels of y as "
            f"given, e.g. class_weight={example!r}."
        )
    weights = np.ones(len(classes))
    for i, label in enumerate(labels):
        weight = class_weight.get(label, 1.0)
        if (
            not isinstance(weight, Real)
            or isinstance(weight, bool)
            or not np.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"class_weight[{label!r}] must be a finite number >= 0; got "
                f"{weight!r}. Give every class a non-negative weight, e.g. 1.0."
            )
        weights[i] = weight
    return weights


class ClassTargetsMixin:
    """The target hooks of the classifiers (KerasMLPClassifier, FineTuner): fitted
    ``classes_`` and target type, rebuilt into a ``ClassTargets`` on demand."""

    def _targets_from_y(self, y):
        targets, y_encoded = ClassTargets.from_y(self, y)
        self.classes_, self._target_type = targets.classes, targets.target_type
        return targets, y_encoded

    def _targets(self):
        return ClassTargets(self._target_type, self.classes_)

    def _sample_weight(self, targets, y_encoded):
        return targets.sample_weight(self.class_weight, y_encoded)


class RegressionTargetsMixin:
    """The target hooks of the regressors (KerasMLPRegressor, FineTunerRegressor):
    fitted ``y_mean_`` and ``y_scale_``, undone on the network's outputs."""

    def _targets_from_y(self, y):
        targets, y = RegressionTargets.from_y(self, y)
        self.y_mean_, self.y_scale_ = targets.mean, targets.scale
        return targets, y

    def _predicted_targets(self, outputs):
        return RegressionTargets(self.y_mean_, self.y_scale_).predict(outputs)

    def _sample_weight(self, targets, y):
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags
