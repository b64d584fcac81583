"""What the Keras classifiers share: the book's dense head, seeds, labels, class
weights, the validation hold-out and reproducible minibatches.

Nothing here touches Keras' global random state: every random choice comes from seeds
drawn from the estimator's ``random_state``.
"""

import contextlib
import math
import threading
from functools import cache
from numbers import Real

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight


def draw_seeds(random_state, n):
    """``n`` int seeds from ``random_state`` (a fresh draw each call when it is None)."""
    rng = check_random_state(random_state)
    return [int(seed) for seed in rng.randint(np.iinfo(np.int32).max, size=n)]


def compile_for_training(model, optimizer, loss, first_inputs, first_targets):
    """Compile ``model`` and create its optimizer and metric variables up front.

    Variables first created inside the traced train step make TensorFlow trace it
    twice, which dominates fit time on small data; metric states are reset at the
    start of every epoch, so the one-row call leaves no trace in the history.
    Changing ``trainable`` only takes effect at the next compile.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=["accuracy"],
        jit_compile=False,  # XLA only adds compile latency here on a CPU
    )
    model.optimizer.build(model.trainable_variables)
    model.compute_metrics(
        first_inputs, first_targets, model(first_inputs, training=False),
        sample_weight=None,
    )


@contextlib.contextmanager
def custom_gradients_released():
    """Unregister the custom gradients TensorFlow registers while tracing in the block.

    Keras' optimizers sum gradients across replicas with ``tf.custom_gradient``, which
    in a traced train step registers its gradient function in TensorFlow's global
    gradient registry and never removes it. That function holds the traced graph,
    whose captured variable handles keep every weight and optimizer slot of the
    model alive: without this, each ``fit`` leaks the whole model (~120 MB for VGG16).
    The gradients of a finished train step are never taken again, so dropping them
    once ``fit`` returns changes nothing but memory.
    """
    registry = _gradient_registry()
    before = set(registry) if registry is not None else None
    try:
        yield
    finally:
        if registry is not None:
            for name in [name for name in registry if name not in before]:
                if name.startswith("CustomGradient-"):
                    registry.pop(name, None)


def _gradient_registry():
    """TensorFlow's name → gradient function dict, or None if it moved."""
    try:
        from tensorflow.python.framework import ops
    except ImportError:
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def early_stopping_callback(patience, verbose):
    """Keras early stopping on the validation loss, restoring the best epoch's weights."""
    import keras

    return keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=patience,
        restore_best_weights=True,
        verbose=int(verbose > 0),
    )


def check_two_classes(estimator, classes):
    if len(classes) < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs samples of at least 2 classes; y "
            f"contains only one class: {classes.tolist()[0]!r}."
        )


def targets_and_loss(y_encoded, n_classes):
    """Keras targets and loss: one sigmoid for two classes, softmax for more."""
    if n_classes == 2:
        return y_encoded.astype(np.float32).reshape(-1, 1), "binary_crossentropy"
    return y_encoded.astype(np.int32), "sparse_categorical_crossentropy"


def probabilities(outputs):
    """(n, n_classes) probabilities from the network's sigmoid or softmax outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs / outputs.sum(axis=1, keepdims=True)  # float32 softmax drifts 1e-7


def head_layers(*, n_classes, hidden_units, dropout, seeds, prefix=""):
    """The book's head: Dense(relu) → Dropout → Dense(sigmoid | softmax), seeded.

    Fixed names keep ``model.summary()`` and saved models independent of how many
    Keras layers the process created before.
    """
    import keras

    hidden_seed, dropout_seed, output_seed = seeds
    n_outputs, activation = (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")
    return [
        keras.layers.Dense(
            hidden_units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=hidden_seed),
            name=f"{prefix}hidden",
        ),
        keras.layers.Dropout(dropout, seed=dropout_seed, name=f"{prefix}dropout"),
        keras.layers.Dense(
            n_outputs,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=output_seed),
            name=f"{prefix}output",
        ),
    ]


def class_weight_vector(class_weight, classes, y):
    """Weight of each class of ``classes`` from a ``class_weight`` parameter, or None.

    ``class_weight`` is None, ``"balanced"`` or a dict keyed by the labels of ``y`` as
    given (strings included); classes missing from the dict weigh 1.
    """
    if class_weight is None:
        return None
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


def hold_out_rows(y_encoded, fraction, seed, *, n_classes):
    """(train rows, validation rows): a stratified split of ``fraction`` of the samples."""
    rows = np.arange(len(y_encoded))
    try:
        train, validation = train_test_split(
            rows, test_size=fraction, stratify=y_encoded, random_state=seed
        )
    except ValueError as exc:
        raise ValueError(
            f"early_stopping=True holds out validation_fraction={fraction} of the "
            f"{len(rows)} training samples, stratified by class, which needs at least "
            "2 samples of every class and a hold-out of at least one sample per class "
            f"({n_classes}), leaving a non-empty training set; here: {exc} Increase "
            "validation_fraction, provide more samples, or pass validation data."
        ) from exc
    return np.sort(train), np.sort(validation)


def shuffled_batches(inputs, targets, sample_weight, *, batch_size, seed, augment=None):
    """A Keras ``PyDataset`` of minibatches, reshuffled every epoch from ``seed``.

    ``inputs`` is an array or any object with ``len()`` and ``inputs[rows]`` (e.g. an
    image loader that decodes on demand). ``augment(inputs_batch, rng)``, when given,
    transforms each batch's inputs with a generator seeded by ``seed`` and the batch
    index. Fit with ``steps_per_epoch=batches.n_batches_per_epoch`` and
    ``shuffle=False``.
    """
    return _shuffled_batches_class()(
        inputs, targets, sample_weight, batch_size, seed, augment
    )


def ordered_batches(inputs, targets, *, batch_size):
    """A finite Keras ``PyDataset`` of ``(inputs, targets)`` batches in order."""
    return _ordered_batches_class()(inputs, targets, batch_size)


@cache
def _ordered_batches_class():
    import keras

    class OrderedBatches(keras.utils.PyDataset):
        def __init__(self, inputs, targets, batch_size):
            super().__init__()
            self._inputs, self._targets = inputs, targets
            self._batch_size = batch_size

        def __len__(self):
            return math.ceil(len(self._targets) / self._batch_size)

        def __getitem__(self, index):
            rows = np.arange(index * self._batch_size,
                             min((index + 1) * self._batch_size, len(self._targets)))
            return self._inputs[rows], self._targets[rows]

    return OrderedBatches


@cache
def _shuffled_batches_class():
    # Defined on first use so that importing the package does not import Keras.
    import keras

    class ShuffledBatches(keras.utils.PyDataset):
        """Endless minibatches of ``(inputs, targets[, sample_weight])``.

        Batch ``i`` belongs to epoch ``i // n_batches_per_epoch`` and its samples depend
        on ``i`` alone, not on when Keras calls the epoch hooks or how far it prefetches,
        so training is reproducible; ``fit`` bounds the epochs with ``steps_per_epoch``.
        One endless pipeline also avoids rebuilding it every epoch (~50 ms each).
        """

        def __init__(self, inputs, targets, sample_weight, batch_size, seed, augment):
            super().__init__()
            self._seed, self._augment = seed, augment
            self._arrays = (
                (inputs, targets) if sample_weight is None
                else (inputs, targets, sample_weight)
            )
            self._n_samples = len(targets)
            self._batch_size = batch_size
            self.n_batches_per_epoch = math.ceil(self._n_samples / batch_size)
            self._rng = np.random.default_rng(seed)
            self._orders = []
            self._lock = threading.Lock()

        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            epoch, batch = divmod(index, self.n_batches_per_epoch)
            with self._lock:  # draw in epoch order whatever index comes first
                while len(self._orders) <= epoch:
                    self._orders.append(self._rng.permutation(self._n_samples))
                order = self._orders[epoch]
            start = batch * self._batch_size
            rows = np.sort(order[start : start + self._batch_size])
            batch = tuple(array[rows] for array in self._arrays)
            if self._augment is None:
                return batch
            rng = np.random.default_rng([self._seed, index])
            return (self._augment(batch[0], rng), *batch[1:])

    return ShuffledBatches
