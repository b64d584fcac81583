"""What the Keras estimators share: the book's dense head, seeds, the validation
hold-out and reproducible minibatches (what they predict is in ``_targets``).

Nothing here touches Keras' global random state: every random choice comes from seeds
drawn from the estimator's ``random_state``.
"""

import contextlib
import math
import threading
from functools import cache

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from ._targets import training_metrics


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
        metrics=training_metrics(loss),
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


def head_layers(*, n_outputs, activation, hidden_units, dropout, seeds, prefix=""):
    """The book's head: Dense(relu) → Dropout → Dense(n_outputs, activation), seeded.

    Fixed names keep ``model.summary()`` and saved models independent of how many
    Keras layers the process created before.
    """
    import keras

    hidden_seed, dropout_seed, output_seed = seeds
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


def hold_out_rows(n_samples, fraction, seed, *, stratify=None):
    """(train rows, validation rows): ``fraction`` of the samples held out, stratified
    by the labels ``stratify`` when given, else a plain shuffled split."""
    rows = np.arange(n_samples)
    try:
        train, validation = train_test_split(
            rows, test_size=fraction, stratify=stratify, random_state=seed
        )
    except ValueError as exc:
        if stratify is None:
            need = "a hold-out of at least one sample and a non-empty training set"
        else:
            need = (
                "at least 2 samples of every class and a hold-out of at least one "
                f"sample per class ({len(np.unique(stratify))}), leaving a non-empty "
                "training set"
            )
        split = "" if stratify is None else ", stratified by class,"
        raise ValueError(
            f"early_stopping=True holds out validation_fraction={fraction} of the "
            f"{n_samples} training samples{split} which needs {need}; here: {exc} "
            "Increase validation_fraction, provide more samples, or pass validation "
            "data."
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
