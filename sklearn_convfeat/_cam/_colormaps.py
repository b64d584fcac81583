"""Colormaps: matplotlib's jet in numpy, any other through matplotlib."""

import numpy as np

# Matplotlib's "jet" as piecewise-linear (position, value) knots per channel.
_JET = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)


def colorize(heat, colormap):
    """(H, W) in [0, 1] → (H, W, 3) RGB in [0, 1]."""
    if isinstance(colormap, str) and colormap == "jet":
        return np.stack([np.interp(heat, *zip(*knots)) for knots in _JET], axis=-1)
    if callable(colormap):
        return np.asarray(colormap(heat), dtype=np.float64)[..., :3]
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError(
            f"`colormap`={colormap!r} needs matplotlib (pip install matplotlib); "
            "'jet' works without it."
        ) from exc
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as exc:
        raise ValueError(
            f"`colormap` must be 'jet' or a matplotlib colormap name such as "
            f"'viridis' or 'inferno'. Got {colormap!r}."
        ) from exc
    return np.asarray(cmap(heat), dtype=np.float64)[..., :3]
