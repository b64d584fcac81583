"""Grad-CAM: channels weighed by the spatial mean of the gradient."""

from ._base import CamMethod


class GradCAM(CamMethod):
    """w_k = mean over (i, j) of d y^c / d A^k_ij.

    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
    """

    name = "gradcam"

    def channel_weights(self, batch):
        return batch.grads.mean(axis=(1, 2))
