"""How the Keras estimators step: optimizers, learning-rate schedules with warm-up,
discriminative learning rates, label smoothing, and the per-epoch learning rate log.

fastai's ``fine_tune`` is the reference: a warm-up then cosine annealing of the
learning rate over the planned steps, and lower rates for deeper pretrained layers.
"""

import numpy as np

OPTIMIZERS = {
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
}
SCHEDULES = ("constant", "cosine")
# A warm-up starts at this share of the peak rate (fastai's one-cycle starts at 1/25).
WARMUP_START = 0.04


def learning_rate_schedule(schedule, peak, *, n_steps, warmup):
    """A float (``"constant"``) or a Keras schedule: linear warm-up over ``warmup``
    of the ``n_steps`` from ``WARMUP_START * peak`` to ``peak``, then cosine
    annealing to 0 at the last step."""
    if schedule == "constant" or n_steps < 2:
        return float(peak)
    import keras

    warmup_steps = int(round(warmup * n_steps))
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(float(peak), n_steps)
    return keras.optimizers.schedules.CosineDecay(
        WARMUP_START * peak,
        max(n_steps - warmup_steps, 1),
        warmup_target=float(peak),
        warmup_steps=warmup_steps,
    )


def make_optimizer(name, learning_rate, *, weight_decay=None, multipliers=None):
    """The Keras optimizer ``name`` (a key of ``OPTIMIZERS``).

    ``weight_decay`` is decoupled weight decay (AdamW's; Keras applies it to every
    optimizer that is given one). ``multipliers`` maps variable paths to a factor of
    the learning rate (discriminative learning rates); unlisted variables get 1.
    """
    import keras

    optimizer_class = getattr(keras.optimizers, OPTIMIZERS[name])
    kwargs = {"learning_rate": learning_rate}
    if weight_decay or name == "adamw":  # AdamW's own default would be 0.004
        kwargs["weight_decay"] = float(weight_decay or 0.0)
    if not multipliers or all(factor == 1 for factor in multipliers.values()):
        return optimizer_class(**kwargs)
    return _scaled_optimizer_class(optimizer_class)(multipliers=multipliers, **kwargs)


def stage_multipliers(stage_variables, lr_mult):
    """Variable path → ``lr_mult ** depth``, ``stage_variables`` listing the trained
    stages' variables from the top (depth 1) down."""
    return {
        variable.path: float(lr_mult) ** depth
        for depth, variables in enumerate(stage_variables, start=1)
        for variable in variables
    }


def _scaled_optimizer_class(optimizer_class):
    class ScaledLearningRates(optimizer_class):
        """``optimizer_class`` with each variable's learning rate scaled by a factor.

        Scaling the rate, not the gradient: adaptive optimizers (Adam, RMSprop)
        divide a scaled gradient's scale out again.
        """

        def __init__(self, *, multipliers, **kwargs):
            super().__init__(**kwargs)
            self._multipliers = dict(multipliers)

        def build(self, variables):
            super().build(variables)
            self._variable_factors = [
                self._multipliers.get(variable.path, 1.0) for variable in variables
            ]

        def update_step(self, gradient, variable, learning_rate):
            factor = self._variable_factors[self._get_variable_index(variable)]
            if factor != 1.0:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    ScaledLearningRates.__name__ = f"Scaled{optimizer_class.__name__}"
    return ScaledLearningRates


def smoothed_loss(loss, label_smoothing, n_classes):
    """``(loss, encode)``: the loss with ``label_smoothing`` and the function that
    turns targets into what it takes. Keras' sparse categorical loss has no
    smoothing, so with smoothing its integer targets become one-hot rows."""
    if not label_smoothing or loss not in _SMOOTHED_LOSSES:
        return loss, _unchanged
    import keras

    if loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing), _unchanged

    def one_hot(targets):
        return np.eye(n_classes, dtype=np.float32)[np.asarray(targets).ravel()]

    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing), one_hot


_SMOOTHED_LOSSES = ("binary_crossentropy", "sparse_categorical_crossentropy")


def _unchanged(targets):
    return targets


def learning_rate_logger():
    """A Keras callback recording the learning rate at the end of each epoch."""
    import keras

    class LearningRateLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    return LearningRateLogger()
