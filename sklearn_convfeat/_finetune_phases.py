"""FineTuner's two training phases: end to end, or on the frozen prefix's cached output.

Without augmentation the frozen lower blocks see the same images every epoch, so their
output is computed once (the frozen-prefix cache) and only the unfrozen top and the head
are trained on it: the same computation as end-to-end training, without repeating the
frozen forward pass every epoch.
"""

import os
import tempfile

import numpy as np

from ._backbone import TensorFlowRunner
from ._images import run_batches
from ._map_augmentation import (
    CACHED_AUGMENTATIONS,
    MapAugmentation,
    QuarterTurns,
    cached_shift,
    cached_views,
)
from ._optimization import (
    learning_rate_logger,
    learning_rate_schedule,
    make_optimizer,
    smoothed_loss,
    stage_multipliers,
)
from ._stages import operation_output, top_operations
from ._training import (
    compile_for_training,
    custom_gradients_released,
    early_stopping_callback,
    ordered_batches,
    shuffled_batches,
)
from ._tta import view_of

HEAD_LAYER_NAMES = ("flatten", "hidden", "dropout", "output")
# The frozen-prefix cache stays in memory while it takes at most this share of the
# memory available when fit starts; beyond it, it goes to a memory-mapped file.
_CACHE_MEMORY_SHARE = 0.5


class _Training:
    """One fit's two phases; subclasses say what each phase trains on."""

    cache_kind = None

    def __init__(self, tuner, source, entry, cut, loss, order_seed):
        self.tuner = tuner
        self.source = source
        self.entry = entry
        self.cut = cut
        self.loss = loss
        self.order_seed = order_seed
        self.history = {"phase": []}
        self.base = base_of(tuner.model_)
        self.always_frozen = source.plugin.frozen_layers(source)

    def run(self, images, targets, sample_weight, validation):
        n_classes = len(getattr(self.tuner, "classes_", ()))
        self.loss, encode = smoothed_loss(self.loss, self.tuner.label_smoothing, n_classes)
        targets = encode(targets)
        if validation is not None:
            validation = (validation[0], encode(validation[1]))
        try:
            self._run_phases(images, targets, sample_weight, validation)
        finally:  # temporary cache files go whatever happened
            self.cleanup()
        _set_trainable(self.base, self.cut, self.always_frozen)
        return self.history

    def _run_phases(self, images, targets, sample_weight, validation):
        tuner = self.tuner
        phase1_model, phase1_inputs, phase1_validation = self.phase1(images, validation)
        _set_trainable(self.base, self.base.operations[-1].name, self.always_frozen)
        self.fit_phase(
            1, phase1_model, phase1_inputs, targets, sample_weight, phase1_validation,
            tuner.head_epochs, tuner.head_learning_rate_, stages=0,
        )
        if tuner.unfreeze_ == 0 or tuner.fine_tune_epochs == 0:
            return
        phase2_model, phase2_inputs, phase2_validation = self.phase2()
        ends = list(self.entry.graph.stage_ends.values())
        steps = (
            range(1, tuner.unfreeze_ + 1) if tuner.gradual_unfreezing
            else [tuner.unfreeze_]
        )
        for step, epochs in zip(steps, _split_epochs(tuner.fine_tune_epochs, len(steps))):
            last_frozen = ends[len(ends) - 1 - step] if step < len(ends) else None
            _set_trainable(self.base, last_frozen, self.always_frozen)
            multipliers = stage_multipliers(
                _stage_variables(self.base, ends, step), tuner.lr_mult
            )
            self.fit_phase(
                2, phase2_model, phase2_inputs, targets, sample_weight,
                phase2_validation, epochs, tuner.fine_tune_learning_rate_,
                stages=step, multipliers=multipliers,
            )

    def augmentation(self, phase):
        """What each training batch's inputs go through in ``phase`` (None: as is)."""
        return None

    def fit_phase(self, phase, model, inputs, targets, sample_weight, validation,
                  epochs, learning_rate, *, stages, multipliers=None):
        if epochs == 0:
            return
        tuner = self.tuner
        augment = self.augmentation(phase)
        batches = shuffled_batches(
            inputs, targets, sample_weight, batch_size=tuner.batch_size,
            seed=self.order_seed + phase + stages, augment=augment,
        )
        schedule = learning_rate_schedule(
            tuner.schedule, learning_rate,
            n_steps=epochs * batches.n_batches_per_epoch, warmup=tuner.warmup,
        )
        optimizer = make_optimizer(
            tuner.optimizer, schedule, weight_decay=tuner.weight_decay,
            multipliers=multipliers,
        )
        first_inputs = batches[0][0][:1]
        compile_for_training(model, optimizer, self.loss, first_inputs, targets[:1])
        timer = _epoch_timer()
        rates = learning_rate_logger()
        callbacks = [timer, rates]
        if tuner.early_stopping and validation is not None:
            callbacks.append(
                early_stopping_callback(tuner.n_iter_no_change, tuner.verbose)
            )
        validation_batches = None
        if validation is not None:
            validation_batches = ordered_batches(*validation, batch_size=tuner.batch_size)
        with custom_gradients_released():
            history = model.fit(
                batches,
                epochs=epochs,
                steps_per_epoch=batches.n_batches_per_epoch,
                shuffle=False,
                validation_data=validation_batches,
                callbacks=callbacks,
                verbose=min(int(tuner.verbose), 2),
            )
        n_epochs = len(history.history["loss"])
        for key, values in history.history.items():
            self.history.setdefault(key, []).extend(float(v) for v in values)
        self.history["phase"].extend([phase] * n_epochs)
        self.history.setdefault("stages_trained", []).extend([stages] * n_epochs)
        self.history.setdefault("learning_rate", []).extend(rates.rates)
        self.history.setdefault("epoch_seconds", []).extend(timer.seconds)

    def cleanup(self):
        pass


class EndToEndTraining(_Training):
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

    def augmentation(self, phase):
        # The quarter turns of "dihedral"; its flips and shifts are layers of model_.
        return QuarterTurns() if self.tuner.augment_ == "dihedral" else None


class CachedTraining(_Training):
    """The frozen prefix runs once per image; epochs train the top and the head."""

    def phase1(self, images, validation):
        import keras

        tuner = self.tuner
        self.map_shape = self.entry.map_shape(self.cut, tuner.image_size_)
        self._folder = None
        # Each training image's prefix output, and its symmetric variants' with cached
        # augmentation.
        self.views = (
            cached_views(tuner.augment_, tuner.image_size_)
            if tuner.augment_ in CACHED_AUGMENTATIONS else ("image",)
        )
        self.n_variants = len(self.views)
        n_val = 0 if validation is None else len(validation[0])
        self.cache_kind = self._choose_cache(self.n_variants * len(images) + n_val)
        self.prefix = self._extract(images, "train", self.views)
        self.prefix_validation = None
        if validation is not None:
            self.prefix_validation = (self._extract(validation[0], "validation"), validation[1])

        # The base's layers above the cut and the head, reused on cached inputs:
        # training these shared layers trains model_ itself.
        has_upper = self.cut != top_operations(self.base)[-1].name
        head = [tuner.model_.get_layer(name) for name in HEAD_LAYER_NAMES]
        prefix_input = keras.Input(self.map_shape, name="frozen_prefix")
        x = prefix_input
        if has_upper:
            upper_part = keras.Model(
                operation_output(self.base, self.cut), self.base.output, name="upper"
            )
            x = upper_part(x, training=False)
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
        if not has_upper:
            return head_model, self.prefix, self.prefix_validation
        features = self._apply(upper, self.prefix, variants=self.n_variants > 1)
        features_validation = None
        if validation is not None:
            features_validation = (self._apply(upper, self.prefix_validation[0]),
                                   validation[1])
        return head_model, features, features_validation

    def phase2(self):
        return self.top, self.prefix, self.prefix_validation

    def augmentation(self, phase):
        if self.n_variants == 1:
            return None
        # Phase 1 trains on the upper blocks' output: only the exact symmetries apply.
        return MapAugmentation(cached_shift(self.tuner.augment_) if phase == 2 else 0)

    def _choose_cache(self, n_images):
        if self.tuner.cache in ("memory", "disk"):
            return self.tuner.cache
        needed = n_images * int(np.prod(self.map_shape)) * 4
        return "memory" if needed <= _CACHE_MEMORY_SHARE * _available_memory() else "disk"

    def _extract(self, images, name, views=("image",)):
        """The prefix's output for ``images``: ``(n, *map_shape)``, or with several
        ``views`` ``(n, len(views), *map_shape)``, in the order of ``views``."""
        tuner = self.tuner
        n_variants = len(views)
        n_values = int(np.prod(self.map_shape))
        shape = (len(images), n_variants, n_values)
        if self.cache_kind == "disk":
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="sklearn_convfeat_cache_")
            out = np.lib.format.open_memmap(
                os.path.join(self._folder.name, f"{name}.npy"),
                mode="w+", dtype=np.float32, shape=shape,
            )
        else:
            out = np.empty(shape, dtype=np.float32)
        runner = TensorFlowRunner(self.source, self.cut, tuner.preprocessing_)
        for variant, view in enumerate(views):
            run_batches(
                lambda batch, view=view: runner.features(view_of(batch, view), "flatten"),
                images,
                n_outputs=n_values, image_size=tuner.image_size_,
                batch_size=max(tuner.batch_size, 32), verbose=tuner.verbose,
                out=out[:, variant],
            )
        if n_variants == 1:
            return out.reshape(len(images), *self.map_shape)
        return out.reshape(len(images), n_variants, *self.map_shape)

    def _apply(self, model, inputs, chunk=256, *, variants=False):
        if variants:  # (n, n_variants, ...): every variant of every image
            flat = self._apply(model, inputs.reshape(-1, *inputs.shape[2:]), chunk)
            return flat.reshape(*inputs.shape[:2], *flat.shape[1:])
        outputs = [
            np.asarray(model.predict_on_batch(inputs[start : start + chunk]))
            for start in range(0, len(inputs), chunk)
        ]
        return np.concatenate(outputs)

    def cleanup(self):
        self.prefix = self.prefix_validation = None
        folder = getattr(self, "_folder", None)
        if folder is not None:
            folder.cleanup()


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


def base_of(model):
    """The convolutional base nested in a FineTuner's network."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model)
                and layer.name != "augmentation")


def cache_cut(entry, unfreeze):
    """The end of the last stage frozen in phase 2 (whose output may be cached);
    None when every stage trains. Raises when ``unfreeze`` exceeds the stages."""
    ends = list(entry.graph.stage_ends.values())
    if unfreeze > len(ends):
        raise ValueError(
            f"`unfreeze` must be at most {len(ends)}, the number of stages of "
            f"{entry.network} ({', '.join(map(repr, ends))}). Got unfreeze={unfreeze}."
        )
    if unfreeze == len(ends):
        return None
    return ends[len(ends) - 1 - unfreeze]


def _split_epochs(epochs, n_steps):
    """``epochs`` shared by ``n_steps`` of gradual unfreezing, the rest to the last."""
    share = max(epochs // n_steps, 1)
    return [share] * (n_steps - 1) + [max(epochs - share * (n_steps - 1), 1)]


def _stage_variables(base, ends, n_trained):
    """Trainable variables of the top ``n_trained`` stages, top stage first."""
    groups = [[] for _ in ends]
    stage = 0
    for operation in top_operations(base):
        if stage == len(ends):
            break
        groups[stage].extend(getattr(operation, "trainable_variables", []))
        # Stages may end at one block (a transformer shallower than 5 blocks).
        while stage < len(ends) and operation.name == ends[stage]:
            stage += 1
    return groups[len(groups) - n_trained :][::-1]


def _set_trainable(base, last_frozen, always_frozen=()):
    """Freeze the base up to ``last_frozen`` (None: nothing), train what follows,
    except the layers named in ``always_frozen``."""
    base.trainable = True
    frozen = last_frozen is not None
    for operation in top_operations(base):
        if hasattr(operation, "trainable"):
            operation.trainable = not frozen and operation.name not in always_frozen
        if operation.name == last_frozen:
            frozen = False


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return 2**31
