"""Eigen-CAM: the first principal component of the feature map; no gradient."""

import numpy as np

from ._base import CamMethod


class EigenCAM(CamMethod):
    """The projection of each cell's activation vector on the first right singular
    vector of the (cells × channels) map, signed so that it grows with the total
    activation. Class-agnostic: the target does not change it.

    M. B. Muhammad, M. Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020.
    """

    name = "eigencam"
    uses_gradients = False

    def coarse(self, batch):
        n_images, height, width, channels = batch.maps.shape
        heat = np.zeros((n_images, height, width))
        for i, maps in enumerate(batch.maps):
            cells = maps.reshape(-1, channels)
            if not np.any(cells):
                continue
            _, _, vt = np.linalg.svd(cells, full_matrices=False)
            projection = cells @ vt[0]
            if projection @ cells.sum(axis=1) < 0:  # the SVD's sign is arbitrary
                projection = -projection
            heat[i] = np.maximum(projection, 0.0).reshape(height, width)
        return heat
