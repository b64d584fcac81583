"""Layer-CAM: positive gradients as cell-wise weights."""

import numpy as np

from ._base import CamMethod


class LayerCAM(CamMethod):
    """ReLU(Σ_k ReLU(g^k) ⊙ A^k): reliable at shallow layers too, where Grad-CAM's
    averaged gradient is noise.

    P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng, Y. Wei, "LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization", IEEE TIP 30, 2021.
    """

    name = "layercam"

    def coarse(self, batch):
        return np.maximum((np.maximum(batch.grads, 0.0) * batch.maps).sum(axis=-1), 0.0)
