"""Score-CAM: each channel weighed by how much its map alone raises the class score."""

import numpy as np

from .._decode import resize
from ._base import CamMethod, top_channels


class ScoreCAM(CamMethod):
    """w_k = p_c(X_b + H^k ⊙ (X - X_b)) - p_c(X_b): the channel's upsampled map H^k,
    min-max normalised, keeps that part of the image and blanks the rest to the
    model's neutral input X_b (the paper masks its normalised input towards 0); the
    weight is the paper's "increase of confidence" over the blank image.

    Costs one forward pass per channel and image: only the ``max_channels`` channels
    of largest mean activation are tried. Memory: the masked copies are built and run
    ``batch_size`` at a time, never all at once (about ``batch_size × H × W × 3 × 4``
    bytes of inputs besides the model's own activations).

    H. Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020.
    """

    name = "scorecam"
    uses_gradients = False

    def channel_weights(self, batch):
        adapter, x = batch.adapter, batch.x
        size = x.shape[1:3]
        weights = np.zeros((len(x), batch.maps.shape[-1]))
        blank = adapter.blank(x[:1])
        for i in range(len(x)):
            target = batch.targets[i]
            baseline = adapter.to_proba(adapter.logits(blank))[0, target]
            channels = top_channels(batch.maps[i], batch.max_channels)
            for start in range(0, len(channels), batch.batch_size):
                chunk = channels[start : start + batch.batch_size]
                masks = resize(batch.maps[i][np.newaxis][..., chunk].astype(np.float32), size)[0]
                low = masks.min(axis=(0, 1))
                high = masks.max(axis=(0, 1))
                keep = high > low  # a constant map carries no location
                if not keep.any():
                    continue
                masks = (masks[..., keep] - low[keep]) / (high[keep] - low[keep])
                masks = np.moveaxis(masks, -1, 0)[..., np.newaxis]
                masked = blank + masks * (x[i][np.newaxis] - blank)
                proba = adapter.to_proba(adapter.logits(masked))[:, target]
                weights[i, chunk[keep]] = proba - baseline
        return weights
