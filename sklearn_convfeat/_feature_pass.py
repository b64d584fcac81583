"""One pass of a fitted base over images: plain or through the feature cache, per view.

``ConvFeatureExtractor.transform`` comes down to :func:`extract_features`. Every
runner (TensorFlow, ONNX Runtime, OpenVINO, INT8) and every input (arrays, paths)
goes through it, so test-time augmentation (:mod:`._tta`) is applied here once.
"""

from . import _cache
from ._backbone import TensorFlowRunner
from ._images import run_batches
from ._pooling import feature_names  # noqa: F401  re-exported
from ._tta import averaged_over_views, tta_views


def extract_features(
    images, runner, *, entry, layer, pooling, n_features, image_size, batch_size,
    on_error="raise", verbose=0, store=None, tta=None,
):
    """Features of ``images`` by ``runner``, cut at ``layer`` and pooled.

    Parameters
    ----------
    images : ImageArray or ImageFiles
    runner : MapsRunner
        What runs the base (``features(batch, pooling)`` and ``maps(batch)``).
    entry : CachedBase or None
        The base, for its graph and map shapes; needed with ``store`` only.
    layer, pooling, n_features, image_size, batch_size, on_error, verbose
        As the fitted extractor holds them.
    store : FeatureStore or None
        The feature cache, or None to compute everything.
    tta : {None, "flip", "dihedral"}
        The views averaged per image (:func:`~._tta.tta_views`).

    Returns
    -------
    features : ndarray of shape (n_images, n_features), float32
    skipped : list of (int, str, str)
    """
    views = tta_views(tta, image_size)
    settings = dict(
        image_size=image_size, batch_size=batch_size, on_error=on_error, verbose=verbose
    )
    if store is None:
        return run_batches(
            averaged_over_views(lambda batch: runner.features(batch, pooling), views),
            images,
            n_outputs=n_features,
            **settings,
        )
    graph = entry.graph
    return _cache.cached_transform(
        store,
        images,
        layer=layer,
        pooling=pooling,
        map_shape=lambda name: entry.map_shape(name, image_size),
        segment=_segment_function(runner, layer),
        # Exported models run the whole cut at once: no resuming there.
        resume_from=(
            [name for name in reversed(graph.names[: graph.position[layer]])
             if name in graph.cut_points]
            if isinstance(runner, TensorFlowRunner) else ()
        ),
        # Lower stages of a convnet are large for what they save; a transformer's
        # blocks all output as many tokens, so every stage end is kept.
        waypoints=[
            name for stage, name in graph.stage_ends.items()
            if (stage >= 3 or entry.prefix_tokens is not None) and name in graph.cut_points
        ],
        views=views,
        **settings,
    )


def _segment_function(runner, layer):
    """``segment(start, capture)`` for :func:`~._cache.cached_transform`."""
    if isinstance(runner, TensorFlowRunner):
        return runner.segment
    return lambda start, capture: (lambda images: {layer: runner.maps(images)})
