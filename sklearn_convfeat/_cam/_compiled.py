"""Compiled TensorFlow functions, cached per Keras model and traced once.

Functions are kept per owner model in a weak dictionary and refer to their models
through weak references only, so an entry goes away with its model. Input signatures
accept any batch and image size: repeated calls trace nothing new.
"""

import threading
import weakref

_COMPILED = weakref.WeakKeyDictionary()  # Keras model → {key: tf.function}
_LOCK = threading.Lock()


def compiled(owner, key, build):
    """The tf.function ``key`` of ``owner`` (a Keras model), built once by ``build()``."""
    with _LOCK:
        functions = _COMPILED.get(owner)
        if functions is None:
            functions = _COMPILED[owner] = {}
        function = functions.get(key)
        if function is None:
            function = functions[key] = build()
    return function


def tracing_counts(owner):
    """{key: number of traces} of ``owner``'s compiled functions (for tests)."""
    with _LOCK:
        functions = dict(_COMPILED.get(owner, {}))
    return {key: function.experimental_get_tracing_count() for key, function in functions.items()}


def compile_gradients(run, image_spec, param_specs, binary):
    """tf.function (images, targets, *params) → (maps, d score/d maps, logits, targets).

    ``run(images, params, tape, channel_scale)`` returns (maps, logits) and watches the
    maps on ``tape``. A target of -1 is the predicted class.
    """
    import tensorflow as tf

    def gradients(images, targets, *params):
        with tf.GradientTape() as tape:
            maps, logits = run(images, params, tape, None)
            scores, targets = class_scores(logits, targets, binary)
            # Images do not interact in inference: the gradient of the sum is each
            # image's own gradient.
            total = tf.reduce_sum(scores)
        return maps, tape.gradient(total, maps), logits, targets

    return tf.function(
        gradients,
        input_signature=[image_spec, tf.TensorSpec((None,), tf.int32), *param_specs],
        reduce_retracing=True,
    )


def compile_forward(run, image_spec, param_specs):
    """tf.function (images, channel_scale, *params) → (maps, logits); the maps of the
    layer are multiplied by ``channel_scale`` (batch, channels) on the way."""
    import tensorflow as tf

    def forward(images, channel_scale, *params):
        return run(images, params, None, channel_scale)

    return tf.function(
        forward,
        input_signature=[image_spec, tf.TensorSpec((None, None), tf.float32), *param_specs],
        reduce_retracing=True,
    )


def compile_logits(run, image_spec, param_specs):
    """tf.function (images, *params) → logits, no layer recorded."""
    import tensorflow as tf

    def forward(images, *params):
        return run(images, params, None, None)[1]

    return tf.function(
        forward, input_signature=[image_spec, *param_specs], reduce_retracing=True
    )


def class_scores(logits, targets, binary):
    """The score of each image's target class, and the targets (-1 → predicted)."""
    import tensorflow as tf

    if binary:
        logit = logits[:, 0]
        targets = tf.where(targets < 0, tf.cast(logit > 0, tf.int32), targets)
        return tf.where(targets == 1, logit, -logit), targets
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    targets = tf.where(targets < 0, predicted, targets)
    return tf.gather(logits, targets, axis=1, batch_dims=1), targets
