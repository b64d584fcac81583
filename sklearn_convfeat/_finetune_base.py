"""What FineTuner and FineTunerRegressor share: checking the data, building the
network (augmentation, preprocessing, the nested base, the head) and running the two
phases of ``_finetune_phases``; the subclasses say what the targets are.
"""

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from ._backbone import fresh_copy
from ._decode import decode_image
from ._finetune_auto import ADJUST, auto_augment, auto_setting, probe_data
from ._finetune_phases import CachedTraining, EndToEndTraining, cache_cut
from ._images import ImageFiles, check_images, run_batches
from ._keras_layers import (
    AUGMENT_DEFAULTS,
    augmentation_layers,
    check_augment,
    preprocessing_layer_class,
    token_pooling_layer_class,
)
from ._keras_state import BackboneParameterState, KerasModelState
from ._map_augmentation import CACHED_AUGMENTATIONS, cached_shift
from ._stages import N_STAGES
from ._training import draw_seeds, head_layers, hold_out_rows
from ._tta import averaged_over_views, tta_views
from ._validation import check_image_size, resolve_base


class BaseFineTuner(BackboneParameterState, KerasModelState, BaseEstimator):
    """The two-phase fine-tuning of FineTuner and FineTunerRegressor.

    Subclasses hold the parameters and implement ``_targets_from_y(y)`` (returning a
    ``_targets`` object and the encoded y, and setting their fitted target
    attributes) and ``_sample_weight(targets, y_encoded)``.
    """

    def _fit(self, X, y, validation_data):
        if isinstance(self.unfreeze, bool):
            raise ValueError(
                f"The 'unfreeze' parameter of {type(self).__name__} must be an int in "
                f"the range [0, {N_STAGES}] (stages trained in phase 2) or 'auto'. Got "
                f"{self.unfreeze!r}."
            )
        images = check_images(X)
        check_consistent_length(images, y)
        targets, y_encoded = self._targets_from_y(y)
        _check_readable(images, "X")
        weights_seed, head_seeds, augment_seed, order_seed, split_seed = _split_seeds(
            draw_seeds(self.random_state, 7)
        )

        source, base_entry, self.image_size_, self.preprocessing_ = resolve_base(
            self, weights_seed
        )
        base_entry.check_single_output(
            f" for {type(self).__name__}, which trains a head on the whole base",
            "Pass keras.Model(backbone.input, backbone.get_layer(name).output) "
            "instead, with the name of the output to fine-tune up to.",
        )
        check_image_size(base_entry, self.image_size_, base_entry.graph.names[-1])
        self._resolve_auto(source, base_entry, images, y_encoded, targets, split_seed)
        cut = cache_cut(base_entry, self.unfreeze_)  # checks unfreeze against the stages
        self.weights_sha256_ = base_entry.sha256
        self._transformer = None if base_entry.prefix_tokens is None else {
            "prefix_tokens": base_entry.prefix_tokens,
            "stage_ends": dict(base_entry.graph.stage_ends),
        }

        train_rows = np.arange(len(y_encoded))
        validation = None
        if validation_data is not None:
            X_val, y_val = _check_validation_pair(validation_data)
            val_images = check_images(X_val, input_name="X_val")
            _check_readable(val_images, "validation_data")
            check_consistent_length(val_images, y_val)
            validation = (val_images, targets.encode(y_val, "validation_data"))
        elif self.early_stopping:
            train_rows, val_rows = hold_out_rows(
                len(y_encoded), self.validation_fraction, split_seed,
                stratify=targets.stratify(y_encoded),
            )
            validation = (images.subset(val_rows), y_encoded[val_rows])

        sample_weight = self._sample_weight(targets, y_encoded)
        if sample_weight is not None:
            sample_weight = sample_weight[train_rows]
        keras_targets = targets.keras(y_encoded[train_rows])
        train_images = images if len(train_rows) == len(y_encoded) else images.subset(train_rows)
        if validation is not None:
            validation = (validation[0], targets.keras(validation[1]))

        use_cache = (
            self.cache is not None and self.augment_ in (False, *CACHED_AUGMENTATIONS)
            and cut is not None and cut in base_entry.graph.cut_points
        )
        augment = self._image_augmentation(base_entry, cut, use_cache)
        self.model_ = self._build_network(
            base_entry, targets, head_seeds, augment, augment_seed
        )
        trainer = CachedTraining if use_cache else EndToEndTraining
        training = trainer(self, source, base_entry, cut, targets.loss, order_seed)
        history = training.run(train_images, keras_targets, sample_weight, validation)
        self.cache_ = training.cache_kind
        self.history_ = history
        self.fine_tune_start_ = history["phase"].count(1)
        return self

    def _resolve_auto(self, source, entry, images, y_encoded, targets, seed):
        """Set ``unfreeze_``, ``head_learning_rate_``, ``fine_tune_learning_rate_``,
        ``pooling_``, ``augment_`` and ``auto_probe_`` (the probe that decided the ``"auto"``
        ones; None when none is ``"auto"``)."""
        self.auto_probe_ = None
        names = (*ADJUST, "augment")
        if any(getattr(self, name) == "auto" for name in names):
            self.auto_probe_ = probe_data(
                source, entry, self.preprocessing_, self.image_size_, images,
                y_encoded, stratify=targets.stratify(y_encoded), seed=seed,
                batch_size=self.batch_size, verbose=self.verbose,
            )
        n_stages = len(entry.graph.stage_ends)
        for name in names:
            value = getattr(self, name)
            if value == "auto":
                value = (auto_augment(self.auto_probe_) if name == "augment"
                         else auto_setting(name, self.auto_probe_, n_stages))
            setattr(self, f"{name}_", value)

    def _outputs(self, X):
        """The network's outputs on the images ``X``."""
        check_is_fitted(self)
        # tta="flip": the mean of the outputs for each image and its mirror
        predict = averaged_over_views(
            self.model_.predict_on_batch, tta_views(self.tta, self.image_size_)
        )
        outputs, _ = run_batches(
            predict,
            check_images(X),
            n_outputs=self.model_.outputs[0].shape[-1],
            image_size=self.image_size_,
            batch_size=self.batch_size,
        )
        return outputs

    def _image_augmentation(self, base_entry, cut, use_cache):
        """Settings of the image-space augmentation layers, or None."""
        if self.augment_ not in CACHED_AUGMENTATIONS:
            return check_augment(self.augment_)
        if use_cache:
            return None  # the cached maps are augmented instead
        height = self.image_size_[0]
        cell = height / base_entry.map_shape(cut, self.image_size_)[0] if cut else 16
        shift = cached_shift(self.augment_) * cell / height
        return {**{key: 0 for key in AUGMENT_DEFAULTS}, "horizontal_flip": True,
                "width_shift_range": shift, "height_shift_range": shift,
                "fill_mode": "constant"}

    def _build_network(self, base_entry, targets, head_seeds, augment, augment_seed):
        import keras

        height, width = self.image_size_
        inputs = keras.Input((height, width, 3), name="image")
        x = inputs
        if augment:
            x = augmentation_layers(augment, augment_seed)(x)
        x = preprocessing_layer_class()(self.preprocessing_, name="preprocessing")(x)
        base = fresh_copy(base_entry, self.image_size_)
        # Inference mode for good: BatchNormalization keeps its ImageNet statistics.
        x = base(x, training=False)
        # The head's first layer makes one vector of the base's output: a convnet's
        # map flattened (the book's), a transformer's tokens pooled as DINOv2's linear
        # evaluation does (class token and mean patch token; the mean alone without a
        # class token); CLIP's and SigLIP's image embedding is a vector already.
        # pooling="avg" averages a convnet's map (the mean patch token of a
        # transformer) instead. The layer is "flatten" whatever it does: the cached
        # training finds the head by name.
        prefix = base_entry.prefix_tokens
        if len(x.shape) == 2:
            x = keras.layers.Flatten(name="flatten")(x)
        elif prefix is None:
            average = self.pooling_ == "avg" and len(x.shape) == 4
            x = (keras.layers.GlobalAveragePooling2D(name="flatten") if average
                 else keras.layers.Flatten(name="flatten"))(x)
        else:
            pooling = "cls+avg" if prefix and self.pooling_ != "avg" else "avg"
            x = token_pooling_layer_class()(pooling, prefix, name="flatten")(x)
        for layer in head_layers(
            n_outputs=targets.n_outputs,
            activation=targets.activation,
            hidden_units=self.hidden_units,
            dropout=self.dropout,
            seeds=head_seeds,
        ):
            x = layer(x)
        return keras.Model(inputs, x, name="finetuner")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _register_keras_objects(self):
        preprocessing_layer_class()  # registers the layers before loading
        token_pooling_layer_class()


def transformer_layout(tuner):
    """None for a FineTuner on a convnet; for a transformer, {"prefix_tokens": tokens
    before its patch tokens, "stage_ends": {stage: layer name}}."""
    check_is_fitted(tuner)
    return getattr(tuner, "_transformer", None)  # None too when pickled before it existed


def _check_validation_pair(validation_data):
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        kind = type(validation_data).__name__
        size = f" of {len(validation_data)} items" if hasattr(validation_data, "__len__") else ""
        raise ValueError(
            "`validation_data` must be a pair (X_val, y_val) of images and labels. "
            f"Got a {kind}{size} instead: pass validation_data=(X_val, y_val)."
        )
    return validation_data


def _check_readable(images, name):
    """Decode every image file of ``images`` now: FineTuner cannot skip any later.

    Training decodes files in the middle of extraction or of an epoch; finding a
    missing or corrupt one before any of that costs one decoding pass.
    """
    if not isinstance(images, ImageFiles):
        return
    images.check_exist()
    for index, path in enumerate(images.paths):
        try:
            decode_image(path)
        except Exception as exc:  # noqa: BLE001  PIL raises many types for bad files
            raise ValueError(
                f"Cannot read image file {path!r} ({name}[{index}]): {exc}. FineTuner "
                "trains on every image it is given: remove or replace the file."
            ) from exc


def _split_seeds(seeds):
    weights_seed, h1, h2, h3, augment_seed, order_seed, split_seed = seeds
    return weights_seed, (h1, h2, h3), augment_seed, order_seed, split_seed
