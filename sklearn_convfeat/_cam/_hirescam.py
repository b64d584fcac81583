"""HiResCAM: the gradient times the activation, cell by cell."""

import numpy as np

from ._base import CamMethod


class HiResCAM(CamMethod):
    """ReLU(Σ_k g^k ⊙ A^k): no spatial averaging of the gradient, so the map is exactly
    the contribution of each cell to the score for a linear head.

    R. L. Draelos, L. Carin, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891, 2020.
    """

    name = "hirescam"

    def coarse(self, batch):
        return np.maximum((batch.grads * batch.maps).sum(axis=-1), 0.0)
