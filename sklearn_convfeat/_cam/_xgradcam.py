"""XGrad-CAM: gradients averaged with the activations as weights."""

import numpy as np

from ._base import CamMethod


class XGradCAM(CamMethod):
    """w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) g^k_ij, from the axioms of sensitivity and
    conservation.

    R. Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs", BMVC 2020.
    """

    name = "xgradcam"

    def channel_weights(self, batch):
        totals = batch.maps.sum(axis=(1, 2))
        weighted = (batch.grads * batch.maps).sum(axis=(1, 2))
        return np.divide(weighted, totals, out=np.zeros_like(weighted), where=totals != 0)
