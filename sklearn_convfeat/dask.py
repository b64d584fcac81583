"""Feature extraction on a Dask cluster: images or paths in, Dask array of features out.

Install with ``pip install "sklearn-convfeat[dask]"``. :func:`transform` runs a fitted
:class:`~sklearn_convfeat.ConvFeatureExtractor` block by block on the workers of
whatever scheduler is active (a ``distributed.Client``, or Dask's local schedulers), and
:func:`upload_weights` copies the extractor's weights file to workers that do not share
the client's file system. Grid search needs nothing from this module: run
``GridSearchCV`` inside ``joblib.parallel_backend("dask")``. The guide is
``docs/scale_out.md``.

Why not ``dask_ml.wrappers.ParallelPostFit``: it assumes 2-D ``(n_samples,
n_features)`` blocks. On images it infers the output from a ``(1, height)`` dummy
array (which is not an image batch) and declares the output with the input's 4-D
chunks, and it takes no ``dask.bag`` of paths; a map over blocks with the right output
shape is all that is needed.
"""

import copy
import hashlib
import os
import sys

try:
    import dask
    import dask.array as da
    import dask.bag as db
    from distributed import WorkerPlugin
except ImportError as exc:
    raise ImportError(
        "sklearn_convfeat.dask needs Dask and dask.distributed, which are not "
        f"installed ({exc}). Install them with: pip install \"sklearn-convfeat[dask]\""
    ) from exc

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._extractor import ConvFeatureExtractor, weights_source, with_weights_file
from ._files import write_atomic
from ._weights import WEIGHTS_ENV_VAR, local_imagenet_file

__all__ = ["transform", "upload_weights"]

# Weights files shipped by upload_weights to this (worker) process: fitted path -> copy.
_UPLOADED = {}


def transform(extractor, X):
    """Extract features from a Dask collection of images or paths, block by block.

    Each block (array chunk, bag or dataframe partition) becomes one task that runs
    ``extractor.transform`` on that block where the task runs, in batches of
    ``extractor.batch_size``, with the extractor's ``backend`` and ``memory``. Only
    the fitted extractor is shipped with the tasks (a few hundred bytes: parameters,
    the weights path or seed, and ``weights_sha256_``); each worker process builds
    the Keras base once, on its first block, and reuses it for every later block (the
    base is cached per process, keyed by its weights). Nothing is computed until the
    result is.

    On each worker the weights come from the first of: a copy shipped with
    :func:`upload_weights`; the file the extractor was fitted with, if the worker can
    read it; the file that ``SKLEARN_CONVFEAT_WEIGHTS`` names on that worker; for
    ``weights="imagenet"``, the worker's Keras cache (downloading once). Whatever the
    file, its arrays must hash to ``extractor.weights_sha256_``, or the task fails
    instead of computing other features.

    Parameters
    ----------
    extractor : ConvFeatureExtractor
        A fitted extractor.
    X : dask.array.Array, dask.bag.Bag, dask.dataframe.Series or DataFrame
        Images as a Dask array of shape (n_images, height, width[, channels]) with
        pixel values in [0, 255], chunked along the first axis only (e.g.
        ``da.from_array(images, chunks=(256, -1, -1, -1))``); or image file paths: a
        1-D Dask array of str, a Dask bag of str, a Dask Series or one-column
        DataFrame. Paths are opened by the workers, so they must be readable there.

    Returns
    -------
    dask.array.Array of shape (n_images, extractor.n_features_out_)
        The features, float32, in the order of ``X``, one chunk per block of ``X``.
        The number of rows per chunk is unknown (NaN) for bags and dataframes, whose
        partition lengths Dask does not know before computing; ``compute()`` works all
        the same, and ``compute_chunk_sizes()`` fills them in. With
        ``extractor.on_error="skip"``, rows of unreadable files are NaN (find them with
        ``da.isnan(features).any(axis=1)``); the warning naming them is issued where
        the block runs (a worker's log), and ``extractor.skipped_`` is left as it was.

    Raises
    ------
    TypeError
        If ``extractor`` is not a ConvFeatureExtractor or ``X`` not a Dask
        collection.
    sklearn.exceptions.NotFittedError
        If ``extractor`` is not fitted.
    ValueError
        If image arrays are chunked along any axis other than the first, or are not
        image-shaped.

    See Also
    --------
    upload_weights : Ship the weights file to workers without a shared file system.

    Examples
    --------
    With Dask's synchronous scheduler (no cluster); on a cluster, create a
    ``distributed.Client`` first and the same code runs on its workers.

    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn_convfeat import ConvFeatureExtractor
    >>> from sklearn_convfeat.dask import transform
    >>> images = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3))
    >>> extractor = ConvFeatureExtractor(weights=None, image_size=32, random_state=0)
    >>> extractor = extractor.fit(images)
    >>> X = da.from_array(images, chunks=(2, -1, -1, -1))
    >>> features = transform(extractor, X)
    >>> features.shape, features.numblocks
    ((6, 512), (3, 1))
    >>> computed = features.compute(scheduler="synchronous")
    >>> np.allclose(computed, extractor.transform(images), rtol=1e-5, atol=1e-6)
    True

    Paths in a bag, two partitions:

    >>> import dask.bag as db
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> paths = [str(folder / f"{i}.png") for i in range(3)]
    >>> for path, image in zip(paths, images):
    ...     Image.fromarray(image.astype(np.uint8)).save(path)
    >>> features = transform(extractor, db.from_sequence(paths, npartitions=2))
    >>> features.compute(scheduler="synchronous").shape
    (3, 512)
    """
    if not isinstance(extractor, ConvFeatureExtractor):
        raise TypeError(
            "`extractor` must be a fitted ConvFeatureExtractor. Got "
            f"{type(extractor).__name__} instead. For a Pipeline, pass its extractor "
            "step (e.g. pipe.named_steps['feat']) and fit the rest on the features."
        )
    check_is_fitted(extractor)
    n_features = extractor.n_features_out_
    token = dask.base.tokenize(X, extractor)
    name = f"convfeat-features-{token}"
    if isinstance(X, da.Array):
        return _transform_array(extractor, X, n_features, name)
    if isinstance(X, db.Bag):
        return _from_partitions(extractor, X.to_delayed(), n_features, name)
    dd = sys.modules.get("dask.dataframe")  # loaded already if X is a dask dataframe
    if dd is not None and isinstance(X, (dd.DataFrame, dd.Series)):
        if X.ndim == 2 and len(X.columns) != 1:
            raise ValueError(
                "`X` as a Dask DataFrame must have exactly one column, the image "
                f"paths. Got {len(X.columns)} columns {list(X.columns)[:5]}: pass the "
                "column of paths, e.g. X['path']."
            )
        return _from_partitions(extractor, X.to_delayed(), n_features, name)
    raise TypeError(
        "`X` must be a Dask collection: a dask.array of images chunked along the "
        "first axis, or a dask.array, dask.bag or dask.dataframe of image paths. Got "
        f"{type(X).__module__}.{type(X).__name__}. For data in memory call "
        "extractor.transform(X), or wrap it: "
        "da.from_array(X, chunks=(256, -1, -1, -1))."
    )


def upload_weights(client, extractor):
    """Copy the extractor's weights file to every worker, present and future.

    For clusters whose workers do not see the client's files. The file's bytes
    (59 MB for the VGG16 base) go to the scheduler once and to each worker as it
    joins (workers restarted after a crash included), which writes them to its
    ``local_directory``; :func:`transform` then uses that copy on the worker. The
    bytes stay in the scheduler's and workers' memory while the upload is registered:
    ``client.unregister_worker_plugin(name)`` with the returned name removes it and the
    copies. Uploading again after the file changed replaces the copies.

    Weights drawn from a seed (``weights=None``) need nothing: each worker draws them
    again. Weights from Keras' ImageNet cache are not uploaded: each worker reads its
    own cache (``~/.keras/models``, downloading once), or the file its
    ``SKLEARN_CONVFEAT_WEIGHTS`` names. Nor are keras-hub preset folders: every worker
    reads the folder at the path the extractor was fitted with (a built keras-hub
    ``Backbone`` travels in the pickle, and a preset name through each worker's
    keras-hub download cache).

    Parameters
    ----------
    client : distributed.Client
        The client of the cluster.
    extractor : ConvFeatureExtractor
        A fitted extractor whose weights are a local file.

    Returns
    -------
    str or None
        The name of the worker plugin that holds the upload, or None when there is
        nothing to upload (random weights).

    Raises
    ------
    ValueError
        If the extractor was fitted with ``weights="imagenet"`` from Keras' cache, or
        its backbone is a keras-hub preset folder (unless its weights are a file).

    See Also
    --------
    transform : Extract features on the workers.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> weights = "/home/me/vgg16.weights.h5"  # doctest: +SKIP
    >>> extractor = ConvFeatureExtractor(weights=weights)  # doctest: +SKIP
    >>> extractor = extractor.fit(paths[:1])  # doctest: +SKIP
    >>> upload_weights(client, extractor)  # doctest: +SKIP
    'sklearn-convfeat-weights-/home/me/vgg16.weights.h5'
    >>> features = transform(extractor, X).compute()  # doctest: +SKIP
    """
    if not isinstance(extractor, ConvFeatureExtractor):
        raise TypeError(
            "`extractor` must be a fitted ConvFeatureExtractor. Got "
            f"{type(extractor).__name__} instead."
        )
    check_is_fitted(extractor)
    source = weights_source(extractor)
    folders = source.plugin.local_paths(source)
    if folders and source.kind != "file":
        raise ValueError(
            f"`extractor`'s backbone is rebuilt from {folders[0]!r}, which "
            "upload_weights does not ship (it ships weights files, not a backbone's "
            "folder such as a keras-hub preset): every worker reads it at that path. "
            "Put it on a file system every worker mounts at that path, or copy it to "
            "that path on each worker."
        )
    # Random weights are a seed, and a model of one's own travels in the pickle.
    if source.kind == "random" or _carried(source):
        return None
    if source.kind == "imagenet":
        name = source.plugin.weights_file_name(source)
        raise ValueError(
            "`extractor` was fitted with weights='imagenet' from Keras' cache, which "
            "upload_weights does not ship: each worker reads its own Keras cache or "
            f"its {WEIGHTS_ENV_VAR} file. To ship the weights, fit the extractor with "
            "the local file instead"
            + (f", e.g. weights=os.path.expanduser('~/.keras/models/{name}')"
               if name else "")
            + "."
        )
    plugin = _WeightsUpload(source.path)
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


def _carried(source):
    """Whether the record itself holds the weights (a model's ``.keras`` bytes)."""
    return source.kind == "imagenet" and (
        source.plugin.carries_weights or source.model_data is not None
    )


class _WeightsUpload(WorkerPlugin):
    """Writes a weights file into each worker's local directory as the worker starts."""

    def __init__(self, path):
        self.path = path
        self.name = f"sklearn-convfeat-weights-{path}"
        with open(path, "rb") as file:
            self.data = file.read()
        self.digest = hashlib.sha256(self.data).hexdigest()

    def setup(self, worker):
        folder = os.path.join(worker.local_directory, "sklearn-convfeat-weights")
        os.makedirs(folder, exist_ok=True)
        # The content digest in the name keeps versions apart; Keras needs the suffix.
        name = f"{self.digest[:16]}-{os.path.basename(self.path)}"
        local = os.path.join(folder, name)
        if not os.path.isfile(local):  # atomic: no task ever reads half a file
            write_atomic(local, lambda file: file.write(self.data))
        _UPLOADED[self.path] = local

    def teardown(self, worker):
        local = _UPLOADED.pop(self.path, None)
        if local is not None and os.path.isfile(local):
            os.remove(local)


def _transform_array(extractor, X, n_features, name):
    if X.ndim == 1:
        if X.dtype.kind not in "OUS":
            raise ValueError(
                "`X` as a 1-D Dask array must hold image file paths (str). Got dtype "
                f"{X.dtype}. Pass images as (n_images, height, width[, channels])."
            )
        return X.map_blocks(
            _features, extractor, chunks=(X.chunks[0], (n_features,)), new_axis=1,
            dtype=np.float32, meta=np.empty((0, 0), np.float32), name=name,
        )
    if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            "`X` as a Dask array must be images of shape (n_images, height, width, "
            "channels) with 1, 3 or 4 channels, (n_images, height, width) for grey "
            f"images, or 1-D image paths. Got shape {X.shape}."
        )
    if any(len(chunks) > 1 for chunks in X.chunks[1:]):
        whole = ", ".join(f"{axis}: -1" for axis in range(1, X.ndim))
        raise ValueError(
            "`X` must be chunked along the first (image) axis only, so that every "
            f"block holds whole images. Got {X.numblocks} blocks per axis (shape "
            f"{X.shape}). Rechunk it with X.rechunk({{{whole}}}), or create it with "
            "da.from_array(images, chunks=(256, -1, -1, -1))."
        )
    return X.map_blocks(
        _features, extractor, chunks=(X.chunks[0], (n_features,)),
        drop_axis=list(range(2, X.ndim)), dtype=np.float32,
        meta=np.empty((0, 0), np.float32), name=name,
    )


def _from_partitions(extractor, partitions, n_features, name):
    meta = np.empty((0, n_features), np.float32)
    blocks = [
        da.from_delayed(
            dask.delayed(_features, pure=True)(
                part, extractor, dask_key_name=f"{name}-{index}"
            ),
            shape=(np.nan, n_features), dtype=np.float32, meta=meta,
        )
        for index, part in enumerate(partitions)
    ]
    return da.concatenate(blocks, axis=0)


def _features(block, extractor):
    """One block of images or paths → float32 features; runs on a worker."""
    if len(block) == 0:  # empty partitions happen (filtered bags, dataframes)
        return np.empty((0, extractor.n_features_out_), dtype=np.float32)
    return _for_this_process(extractor).transform(block)


def _for_this_process(extractor):
    """A copy of ``extractor`` that reads its weights where this process finds them.

    A copy, so that the tasks of a local scheduler, which share the object, never
    write ``skipped_`` on the user's extractor; the progress bar is off on workers.
    The copy's base and compiled forward come from the process-wide caches.
    """
    local = copy.copy(extractor)
    local.verbose = 0
    source = weights_source(extractor)
    for needed in source.plugin.local_paths(source):
        if not os.path.exists(needed):
            raise FileNotFoundError(
                f"The extractor's backbone is rebuilt from {needed!r}, which is not "
                f"on {_where()}. Put it on a file system every worker mounts at that "
                "path, or copy it to that path on each worker (upload_weights ships "
                "weights files, not a backbone's folder such as a keras-hub preset)."
            )
    path = _weights_here(source)
    if path is not None:
        try:
            local = with_weights_file(local, path)
        except RuntimeError as exc:  # the sha256 check failed
            raise RuntimeError(
                f"The weights file {path!r} on {_where()} holds other weights than the "
                f"extractor was fitted with ({exc}). Point SKLEARN_CONVFEAT_WEIGHTS on "
                "the workers at a copy of the same file, or ship it with "
                "upload_weights."
            ) from exc
    return local


def _weights_here(source):
    """The file to read ``source``'s weights from here, or None to use ``source``."""
    if source.kind == "random" or _carried(source):
        return None
    if source.kind == "file" and source.path in _UPLOADED:
        return _UPLOADED[source.path]
    if source.kind == "file" and os.path.isfile(source.path):
        return None
    local = local_imagenet_file(source)
    if local is not None:
        return local
    if source.kind == "imagenet":
        return None  # Keras' cache, or its download, as on the client
    raise FileNotFoundError(
        f"The weights file {source.path!r} of the extractor is not readable on "
        f"{_where()}. Put it on a file system every worker mounts at that path, set "
        f"{WEIGHTS_ENV_VAR} on the workers to their own copy, or call "
        "sklearn_convfeat.dask.upload_weights(client, extractor) before computing."
    )


def _where():
    from distributed import get_worker

    try:
        return f"worker {get_worker().address}"
    except ValueError:  # not inside a worker: a local scheduler
        return "this machine"
