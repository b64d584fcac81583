"""How a cut's output becomes one row of features: the one pooling of every path.

A convnet's cut outputs feature maps ``(N, h, w, c)``, pooled by name: ``"flatten"``,
``"avg"`` or ``"max"``. A vision transformer's outputs tokens ``(N, tokens, width)``:
its class token and register tokens (if any) first, then one token per image patch,
row by row. Those are pooled by a :class:`TokenPooling`, which also knows how many
tokens precede the patches. The extractor, the feature cache and every runtime hand
the pooling value on without looking inside it, so both kinds go through one path.
"""

from dataclasses import dataclass

import numpy as np

MAP_POOLINGS = ("flatten", "avg", "max")
TOKEN_POOLINGS = ("cls", "avg", "cls+avg", "flatten", "embedding")
POOLINGS = tuple(dict.fromkeys(MAP_POOLINGS + TOKEN_POOLINGS))


@dataclass(frozen=True)
class TokenPooling:
    """A pooling of transformer tokens.

    Attributes
    ----------
    name : {"cls", "avg", "cls+avg", "flatten", "embedding"}
        ``"cls"`` the class token; ``"avg"`` the mean of the patch tokens (never the
        class or register tokens); ``"cls+avg"`` both, concatenated; ``"flatten"``
        the patch tokens in grid order; ``"embedding"`` the network's own image
        embedding (its output is already one vector per image).
    prefix_tokens : int
        Tokens before the first patch token (class and register tokens).
    """

    name: str
    prefix_tokens: int


def pooling_name(pooling):
    """The ``pooling`` parameter value a pooling stands for."""
    return pooling.name if isinstance(pooling, TokenPooling) else pooling


def _mean_rows(values):
    """(N, positions, c) → (N, c): each image summed on its own, from a fresh
    C-ordered copy, so a row does not depend on the batch it came in."""
    n_images, positions, channels = values.shape
    rows = np.empty((n_images, channels), dtype=np.float32)
    for i, image in enumerate(values):
        rows[i] = np.add.reduce(np.array(image, dtype=np.float32, order="C"), axis=0) / (
            np.float32(positions)
        )
    return rows


def pool_array(maps, pooling):
    """A cut's output (maps or tokens) → float32 feature rows, as every runner pools.

    The one pooling of features (TensorFlow, exported runtimes, the feature cache),
    so that they agree bit for bit.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if isinstance(pooling, TokenPooling):
        return _pool_tokens(maps, pooling)
    if pooling == "avg":
        return _mean_rows(maps.reshape(len(maps), -1, maps.shape[-1]))
    if pooling == "max":
        return maps.max(axis=(1, 2))
    return maps.reshape(len(maps), -1)


def _pool_tokens(tokens, pooling):
    name, prefix = pooling.name, pooling.prefix_tokens
    if name == "embedding":
        return tokens.reshape(len(tokens), -1)
    if name == "flatten":
        return tokens[:, prefix:].reshape(len(tokens), -1)
    average = _mean_rows(tokens[:, prefix:]) if name != "cls" else None
    if name == "avg":
        return average
    cls = np.array(tokens[:, 0], dtype=np.float32)
    return cls if name == "cls" else np.concatenate([cls, average], axis=1)


def pool(maps, pooling):
    """:func:`pool_array` in TensorFlow, for differentiable paths (CAM gradients) only.

    Its mean may differ from :func:`pool_array` in the last bits: features never go
    through it.
    """
    import tensorflow as tf

    if isinstance(pooling, TokenPooling):
        name, prefix = pooling.name, pooling.prefix_tokens
        if name == "embedding":
            return maps
        patches = maps[:, prefix:]
        if name == "flatten":
            return tf.reshape(patches, (tf.shape(maps)[0], -1))
        average = tf.reduce_mean(patches, axis=1)
        if name == "avg":
            return average
        return maps[:, 0] if name == "cls" else tf.concat([maps[:, 0], average], axis=1)
    if pooling == "avg":
        return tf.reduce_mean(maps, axis=(1, 2))
    if pooling == "max":
        return tf.reduce_max(maps, axis=(1, 2))
    return tf.reshape(maps, (tf.shape(maps)[0], -1))


def n_pooled_features(pooling, shape):
    """Features per image that ``pooling`` makes of one output of ``shape`` (no batch)."""
    if isinstance(pooling, TokenPooling):
        name, prefix = pooling.name, pooling.prefix_tokens
        if name == "embedding":
            return int(np.prod(shape))
        if name == "flatten":
            return (shape[0] - prefix) * shape[-1]
        return shape[-1] * (2 if name == "cls+avg" else 1)
    return int(np.prod(shape)) if pooling == "flatten" else shape[-1]


def feature_names(layer, pooling, shape):
    """Names of the features, in the order :func:`pool_array` lays them out."""
    if isinstance(pooling, TokenPooling):
        name, prefix = pooling.name, pooling.prefix_tokens
        width = shape[-1]
        if name == "embedding":
            names = [f"{layer}_{c}" for c in range(int(np.prod(shape)))]
        elif name == "flatten":
            names = [
                f"{layer}_patch{patch}_{c}"
                for patch in range(shape[0] - prefix) for c in range(width)
            ]
        else:
            names = [
                f"{layer}_{part}_{c}" for part in name.split("+") for c in range(width)
            ]
        return np.asarray(names, dtype=object)
    height, width, channels = shape
    if pooling == "flatten":
        names = [
            f"{layer}_{row}_{col}_{channel}"
            for row in range(height)
            for col in range(width)
            for channel in range(channels)
        ]
    else:
        names = [f"{layer}_{pooling}_{c}" for c in range(channels)]
    return np.asarray(names, dtype=object)
