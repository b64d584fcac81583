"""Ablation-CAM: each channel weighed by the score lost when it is zeroed."""

import numpy as np

from ._base import CamMethod, target_scores, top_channels


class AblationCAM(CamMethod):
    """w_k = (y^c - y^c_k) / y^c, where y^c_k is the class score with channel k of the
    layer set to zero; no gradient.

    Costs one forward pass per channel and image: only the ``max_channels`` channels
    of largest mean activation are ablated (the others get weight 0). Memory: the
    ablated copies run ``batch_size`` at a time (about ``batch_size × H × W × 3 × 4``
    bytes of inputs besides the model's own activations).

    H. G. Ramaswamy, S. Desai, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV 2020.
    """

    name = "ablationcam"
    uses_gradients = False

    def channel_weights(self, batch):
        adapter, x = batch.adapter, batch.x
        n_channels = batch.maps.shape[-1]
        weights = np.zeros((len(x), n_channels))
        for i in range(len(x)):
            target = np.array([batch.targets[i]])
            score = target_scores(adapter, x[i : i + 1], target, 1)[0]
            channels = top_channels(batch.maps[i], batch.max_channels)
            for start in range(0, len(channels), batch.batch_size):
                chunk = channels[start : start + batch.batch_size]
                scale = np.ones((len(chunk), n_channels), dtype=np.float32)
                scale[np.arange(len(chunk)), chunk] = 0.0
                copies = np.repeat(x[i : i + 1], len(chunk), axis=0)
                ablated = target_scores(
                    adapter, copies, np.repeat(target, len(chunk)), len(chunk), scale
                )
                weights[i, chunk] = (score - ablated) / max(abs(score), 1e-7)
        return weights
