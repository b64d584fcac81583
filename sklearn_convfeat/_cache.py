"""Content-keyed cache of VGG16 feature maps, for ``ConvFeatureExtractor(memory=...)``.

In FP32 the extractor learns nothing, so the feature map of an image at a layer depends
only on the image's bytes and on (weights, image size, preprocessing, backend): a cache
keyed by those can serve every fold and every candidate of a grid search. Entries are the
raw (h, w, c) maps at a layer, before pooling, so that a deeper layer can be computed
from a cached shallower one instead of from the pixels; pooling is applied on the way
out and is not part of the key. With test-time augmentation, the maps of an image's
mirror are entries of their own (key ``<key>-mirror``), next to the image's.

Layout on disk::

    <location>/sklearn_convfeat/<namespace>/namespace.json   what the namespace means
    <location>/sklearn_convfeat/<namespace>/<layer>/<key[:2]>/<key>.map

Every file is written to a temporary name in its final folder and renamed into place
(``os.replace``, atomic on POSIX and Windows), so readers, concurrent writers in other
processes and killed processes never see or leave a partial entry; an entry that does not
load as the expected array counts as a miss and is rewritten.

An entry is ``MAGIC``, a 32-byte BLAKE2b checksum of the rest, then the map as a ``.npy``
payload. A checksum that does not match (a damaged or edited entry) is a miss, rewritten,
with a :class:`CacheIntegrityWarning`. With ``SKLEARN_CONVFEAT_CACHE_KEY`` set to a secret
shared by the processes that use the folder, the checksum is keyed: whoever can write to
the folder but does not know the key cannot forge an entry that is served.

A folder that cannot be written (read-only, or a file where a folder should be) does not
fail ``transform``: entries already there are still read, nothing new is stored, and one
:class:`CacheWriteWarning` names the folder.
"""

import hashlib
import io
import json
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._files import write_atomic
from ._images import progress_bar, readable_batches
from ._pooling import n_pooled_features, pool_array
from ._tta import mean_over_views, view_key, view_of

FORMAT_VERSION = 2  # 2: entries carry a checksum
MAGIC = b"SCFMAP2\n"
KEY_ENV_VAR = "SKLEARN_CONVFEAT_CACHE_KEY"
SUBFOLDER = "sklearn_convfeat"
RAM_BUDGET_BYTES = 1 << 30  # per process, shared by every extractor



class CacheIntegrityWarning(UserWarning):
    """A feature-cache entry failed its checksum; it was recomputed and rewritten."""


class CacheWriteWarning(UserWarning):
    """The feature-cache folder cannot be written; features are computed uncached."""


def namespace_key(**settings):
    """Hex digest naming everything but the image and the layer that fixes a map."""
    settings = {"format": FORMAT_VERSION, **settings}
    text = json.dumps(settings, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32], settings


def content_keys(images):
    """A digest of each image's content: file bytes for paths, pixel values for arrays.

    None for a file that cannot be read (the decoder then reports or skips it).
    """
    if hasattr(images, "paths"):
        return [_file_key(path) for path in images.paths]
    array = images.array
    header = f"{array.dtype.str}{array.shape[1:]}".encode()
    return [
        hashlib.blake2b(header + np.ascontiguousarray(image).tobytes(), digest_size=20)
        .hexdigest()
        for image in array
    ]


def _file_key(path):
    digest = hashlib.blake2b(b"file:", digest_size=20)
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class _RamCache:
    """Least-recently-used arrays, bounded by their total size in bytes."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key, value):
        if value.nbytes > self.max_bytes:
            return
        value = value.copy()
        value.setflags(write=False)  # callers get views of it: nobody may edit it
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._entries[key] = value
            self.nbytes += value.nbytes
            while self.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def __len__(self):
        return len(self._entries)


RAM_CACHE = _RamCache(RAM_BUDGET_BYTES)


def clear_ram_cache():
    """Forget every feature map this process keeps in memory."""
    RAM_CACHE.clear()


def resolve_location(memory):
    """The folder of a ``memory`` parameter value, or None for the in-memory cache only."""
    location = getattr(memory, "location", memory)  # joblib.Memory or a path
    if location is None:
        return None
    root = Path(os.fspath(location)).expanduser()
    folder = root / SUBFOLDER
    if root.is_file():
        raise ValueError(
            f"`memory` must be a directory for the feature cache (or None, or a "
            f"joblib.Memory). Got {os.fspath(location)!r}, which is a file. Pass a "
            "folder path; it is created if missing."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if folder.is_dir():  # read-only, filled by others: still worth reading
            return folder
        _warn_unwritable(location, exc)
        return None
    return folder


def _warn_unwritable(location, exc):
    warnings.warn(
        f"`memory` folder {os.fspath(location)!r} cannot be written ({exc}): features "
        "are computed without storing them there. Pass a folder you can write to, or "
        "memory=None.",
        CacheWriteWarning,
        stacklevel=4,
    )


def _checksum(payload):
    secret = os.environ.get(KEY_ENV_VAR)
    key = hashlib.sha256(secret.encode()).digest() if secret else b""
    return hashlib.blake2b(payload, key=key, digest_size=32).digest()


def encode_entry(maps):
    """The bytes of a cache entry holding ``maps``."""
    buffer = io.BytesIO()
    np.save(buffer, maps, allow_pickle=False)
    payload = buffer.getvalue()
    return MAGIC + _checksum(payload) + payload


def decode_entry(data):
    """The array of an entry's bytes; ``ValueError`` when damaged or forged."""
    header = len(MAGIC) + 32
    if not data.startswith(MAGIC) or len(data) < header:
        raise ValueError("not a feature-cache entry")
    payload = data[header:]
    if data[len(MAGIC) : header] != _checksum(payload):
        raise ValueError("checksum mismatch")
    return np.load(io.BytesIO(payload), allow_pickle=False)


class FeatureStore:
    """Feature maps of one namespace: the process-wide RAM cache, then ``folder``."""

    def __init__(self, folder, namespace, settings):
        self.folder = None if folder is None else Path(folder) / namespace
        self.namespace = namespace
        self.writable = self.folder is not None
        if self.folder is not None and not (self.folder / "namespace.json").is_file():
            description = json.dumps(settings, indent=1).encode()
            self._write(self.folder / "namespace.json", description)

    def _path(self, layer, key):
        return self.folder / layer / key[:2] / f"{key}.map"

    def _write(self, path, data):
        if not self.writable:
            return
        try:
            write_atomic(path, lambda file: file.write(data))
        except OSError as exc:  # nothing computed is lost: go on without storing
            self.writable = False
            _warn_unwritable(self.folder.parent.parent, exc)

    def get(self, layer, key, shape):
        """The (h, w, c) float32 map, or None when absent or unreadable."""
        ram_key = (self.namespace, layer, key)
        maps = RAM_CACHE.get(ram_key)
        if maps is not None or self.folder is None:
            return maps
        path = self._path(layer, key)
        try:
            data = path.read_bytes()
        except OSError:
            return None  # absent: a miss
        try:
            maps = decode_entry(data)
        except (ValueError, EOFError) as exc:
            warnings.warn(
                f"Feature-cache entry {str(path)!r} is damaged or was altered ({exc}): "
                "it is recomputed and rewritten.",
                CacheIntegrityWarning,
                stacklevel=2,
            )
            return None
        if maps.shape != tuple(shape) or maps.dtype != np.float32:
            return None
        RAM_CACHE.put(ram_key, maps)
        return maps

    def contains(self, layer, key):
        if RAM_CACHE.get((self.namespace, layer, key)) is not None:
            return True
        return self.folder is not None and self._path(layer, key).is_file()

    def put(self, layer, key, maps):
        maps = np.ascontiguousarray(maps, dtype=np.float32)
        RAM_CACHE.put((self.namespace, layer, key), maps)
        if self.writable:
            self._write(self._path(layer, key), encode_entry(maps))


def cached_transform(
    store, images, *, layer, pooling, map_shape, segment, resume_from=(), waypoints=(),
    views=("image",), batch_size, image_size, on_error="raise", verbose=0,
):
    """Features of ``images`` at ``layer`` through ``store``: compute only what it lacks.

    Parameters
    ----------
    store : FeatureStore
    images : ImageArray or ImageFiles
    layer : str
        The layer whose maps are pooled into features.
    pooling : {"flatten", "avg", "max"} or TokenPooling
        As :func:`~._pooling.pool_array` takes it.
    map_shape : callable
        ``map_shape(layer)`` is the shape of that layer's maps (or tokens).
    segment : callable
        ``segment(start, capture)`` → a function of a batch (decoded images when
        ``start`` is None, else maps of ``start``) → ``{layer: maps}``, holding
        ``layer`` and each layer of ``capture`` it goes by.
    resume_from : sequence of str
        Shallower layers, deepest first, whose cached maps a miss may resume from.
    waypoints : sequence of str
        Layers whose maps a pass also stores when it goes by them, for later, deeper
        requests to resume from (the extractor passes the ends of stages 3-5: lower
        ones are large for what they save, e.g. VGG16's block2_pool is twice
        block3_pool and blocks 1-2 are 32 % of its FLOPs).
    views : sequence of str
        Test-time augmentation views (:func:`~._tta.tta_views`): each view of an
        image is an entry of its own (:func:`~._tta.view_key`), pooled on its own,
        and the features are the mean over views. An image missing several views
        is decoded once.

    Returns
    -------
    features : ndarray of shape (n_images, n_features), float32
        NaN rows for files that could not be read.
    skipped : list of (int, str, str)
        (index, path, reason) of those files.
    """
    n_images = len(images)
    image_keys = content_keys(images)
    # Item ``v * n_images + i`` is view ``views[v]`` of image ``i``.
    keys = [view_key(key, view) for view in views for key in image_keys]
    n_features = n_pooled_features(pooling, map_shape(layer))
    out = np.full((len(keys), n_features), np.nan, dtype=np.float32)  # unread: NaN
    misses = []
    for item, key in enumerate(keys):
        maps = None if key is None else store.get(layer, key, map_shape(layer))
        if maps is None:
            misses.append(item)
        else:
            out[item] = pool_array(maps[np.newaxis], pooling)[0]
    # Resume each miss from the deepest shallower map the cache holds for it.
    by_start = {}
    for item in misses:
        key = keys[item]
        start = next(
            (earlier for earlier in resume_from if key and store.contains(earlier, key)),
            None,
        )
        by_start.setdefault(start, []).append(item)
    skipped = []
    progress = progress_bar(len(misses), batch_size, verbose) if misses else None
    work = list(by_start.items())
    while work:
        start, items = work.pop()
        run = segment(start, tuple(waypoints))
        if start is None:
            batches = _decoded_batches(images, items, views, batch_size, image_size, on_error)
        else:
            batches = _cached_batches(store, keys, start, map_shape(start), items, batch_size)
        evicted = []
        for batch_items, inputs, left_out in batches:
            if start is None:
                skipped.extend(left_out)
            else:
                evicted.extend(left_out)
            if not batch_items:
                continue
            outputs = run(inputs)
            for output_layer, layer_maps in outputs.items():
                for item, maps in zip(batch_items, layer_maps):
                    store.put(output_layer, keys[item], maps)
            out[batch_items] = pool_array(outputs[layer], pooling)
            if progress is not None:
                progress.add(1)
        if evicted:  # cached maps gone since we looked: start those from the pixels
            work.append((None, evicted))
    features = mean_over_views(out.reshape(len(views), n_images, n_features))
    for index, _, _ in skipped:
        features[index] = np.nan
    return features, skipped


def _decoded_batches(images, items, views, batch_size, image_size, on_error):
    """(items, decoded views, [(image, path, reason) of unreadable files]) batches.

    Each image is decoded once for all of its missing views; a forward batch holds at
    most ``batch_size`` items.
    """
    n_images = len(images)
    wanted = {}
    for item in sorted(items, key=lambda item: (item % n_images, item)):
        wanted.setdefault(item % n_images, []).append(item)
    rows = list(wanted)
    batches = readable_batches(images.subset(rows), batch_size, image_size, on_error)
    for offsets, decoded, failed in batches:
        failed = [(rows[offset], path, reason) for offset, path, reason in failed]
        pending = [
            (item, pixels)
            for offset, pixels in zip(offsets, decoded)
            for item in wanted[rows[offset]]
        ]
        if not pending:
            yield [], None, failed
        for first in range(0, len(pending), batch_size):
            chunk = pending[first : first + batch_size]
            inputs = np.concatenate([
                view_of(pixels[np.newaxis], views[item // n_images]) for item, pixels in chunk
            ])
            yield [item for item, _ in chunk], inputs, failed if first == 0 else []


def _cached_batches(store, keys, start, shape, rows, batch_size):
    """(rows, cached maps of ``start``, [rows whose map is gone]) batches."""
    for first in range(0, len(rows), batch_size):
        found, gone = [], []
        for row in rows[first : first + batch_size]:
            maps = store.get(start, keys[row], shape)
            (gone.append(row) if maps is None else found.append((row, maps)))
        inputs = np.stack([maps for _, maps in found]) if found else None
        yield [row for row, _ in found], inputs, gone
