"""Grad-CAM++: positive gradients, each weighed by higher-order terms."""

import numpy as np

from ._base import CamMethod


class GradCAMPlusPlus(CamMethod):
    """w_k = Σ_ij α_ij ReLU(g_ij), α_ij = g_ij² / (2 g_ij² + Σ_ab A_ab g_ij³).

    The paper's Eq. 19 with the score exp(y^c): for a piecewise-linear network its
    second and third derivatives are exp(y)·g² and exp(y)·g³, and exp(y) cancels out,
    so only the first-order gradient g is needed (as in the authors' and
    pytorch-grad-cam's code; ``tests/test_cam_methods.py`` checks it against true
    higher-order derivatives).

    A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian, "Grad-CAM++:
    Improved Visual Explanations for Deep Convolutional Networks", WACV 2018.
    """

    name = "gradcam++"

    def channel_weights(self, batch):
        grads = batch.grads
        g2 = grads**2
        denominator = 2.0 * g2 + batch.maps.sum(axis=(1, 2), keepdims=True) * grads**3
        alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=denominator != 0)
        return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))
