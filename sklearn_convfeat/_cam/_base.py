"""What a CAM method is: a way to weigh the channels of a layer's feature map.

Every method sees one batch of images through :class:`LayerBatch` (the model inputs,
the maps, their gradients for the methods that use them, the targets and the model's
adapter for the methods that run the model again) and returns coarse heatmaps at the
map's resolution. Most only define :meth:`CamMethod.channel_weights`; the map is then
``ReLU(Σ_k w_k A_k)``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class LayerBatch:
    """One batch as a method sees it."""

    x: np.ndarray  # model inputs (n, H, W, c)
    maps: np.ndarray  # (n, h, w, k) float64
    grads: np.ndarray | None  # d score / d maps, same shape, or None
    targets: np.ndarray  # class index per image
    adapter: object  # the model's adapter (forward passes)
    max_channels: int | None  # channels tried per image by the perturbation methods
    batch_size: int  # images per forward pass


class CamMethod:
    """Base class. ``uses_gradients`` says whether the batch carries gradients."""

    name = None
    uses_gradients = True

    def channel_weights(self, batch):
        """(n, k) weights of the channels."""
        raise NotImplementedError

    def coarse(self, batch):
        """(n, h, w) heatmaps before upsampling and scaling."""
        weights = self.channel_weights(batch)
        return np.maximum(np.einsum("nhwk,nk->nhw", batch.maps, weights), 0.0)


def top_channels(maps, max_channels):
    """The channels of one image's (h, w, k) map by decreasing mean activation, the
    first ``max_channels`` of them (None: all)."""
    channels = np.argsort(-maps.mean(axis=(0, 1)), kind="stable")
    return channels if max_channels is None else channels[:max_channels]


def target_scores(adapter, x, targets, batch_size, channel_scale=None):
    """The target's logit-based score of each row of ``x``, ``batch_size`` at a time
    (the maps optionally scaled per channel); class 0 of a one-unit output is -z."""
    scores = np.empty(len(x))
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        scale = None if channel_scale is None else channel_scale[start:stop]
        _, logits = adapter.forward(x[start:stop], scale)
        rows = np.arange(len(logits))
        if logits.shape[1] == 1:
            sign = np.where(targets[start:stop] == 1, 1.0, -1.0)
            scores[start:stop] = sign * logits[:, 0]
        else:
            scores[start:stop] = logits[rows, targets[start:stop]]
    return scores
