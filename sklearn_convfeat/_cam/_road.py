"""Noisy linear imputation of removed pixels (ROAD, Rong et al. 2022).

Each removed pixel becomes the weighted mean of its eight neighbours (1/6 for the four
direct ones, 1/12 for the diagonals, renormalised at borders), known or removed alike:
one sparse linear system per image, solved for all channels at once; then Gaussian
noise is added to the imputed pixels, so that the removal leaves no shape of its own
for the model to read.
"""

import numpy as np

_OFFSETS = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)


def impute(image, removed, noise, rng):
    """``image`` (H, W, c) with the pixels where ``removed`` (H, W) is True imputed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width, channels = image.shape
    unknown = np.flatnonzero(removed)
    if unknown.size == 0:
        return image.copy()
    index = np.full(height * width, -1)
    index[unknown] = np.arange(unknown.size)
    rows_u, cols_u = np.divmod(unknown, width)
    flat = image.reshape(-1, channels).astype(np.float64)
    total = np.zeros(unknown.size)
    neighbours = []
    for d_row, d_col, weight in _OFFSETS:
        r, c = rows_u + d_row, cols_u + d_col
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        total += weight * inside
        neighbours.append((inside, r * width + c, weight))
    matrix_rows, matrix_cols, values = [np.arange(unknown.size)], [np.arange(unknown.size)], [
        np.ones(unknown.size)]
    rhs = np.zeros((unknown.size, channels))
    for inside, neighbour, weight in neighbours:
        share = np.where(inside, weight / total, 0.0)
        neighbour = np.where(inside, neighbour, 0)
        is_unknown = inside & (index[neighbour] >= 0)
        matrix_rows.append(np.flatnonzero(is_unknown))
        matrix_cols.append(index[neighbour[is_unknown]])
        values.append(-share[is_unknown])
        known = inside & ~is_unknown
        rhs[known] += share[known, np.newaxis] * flat[neighbour[known]]
    matrix = coo_matrix(
        (np.concatenate(values), (np.concatenate(matrix_rows), np.concatenate(matrix_cols))),
        shape=(unknown.size, unknown.size),
    ).tocsc()
    solved = spsolve(matrix, rhs).reshape(unknown.size, channels)
    out = flat.copy()
    out[unknown] = solved + rng.normal(scale=noise, size=solved.shape)
    return out.reshape(image.shape).astype(np.float32)
