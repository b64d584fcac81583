"""Showing heatmaps: ``overlay``, the :class:`CamDisplay` figure and ``plot_cam``."""

import os
from numbers import Real

import numpy as np

from .._compat import Interval, validate_params
from .._decode import decode_image, to_rgb
from ._api import explain_images
from ._colormaps import colorize
from ._inputs import check_heatmap, original, resize_map


@validate_params(
    {
        "image": "no_validation",
        "heatmap": "no_validation",
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "colormap": [str, callable],
    },
    prefer_skip_nested_validation=True,
)
def overlay(image, heatmap, *, alpha=0.4, colormap="jet"):
    """Lay a heatmap over an image, coloured by a colormap.

    Parameters
    ----------
    image : array-like of shape (height, width[, channels]) or str
        The picture: uint8 or float pixel values in [0, 255], grey, RGB or RGBA
        (alpha is dropped), or an image file path.
    heatmap : array-like of shape (h, w)
        Values in [0, 1] (outside values are clipped), such as one heatmap of
        :func:`cam`; resized (bilinear) to the image's size when it differs.
    alpha : float, default=0.4
        Opacity of the coloured heatmap, in [0, 1]: each pixel is
        ``(1 - alpha) * image + alpha * colour``.
    colormap : str or callable, default="jet"
        ``"jet"`` is built in (matplotlib's jet, computed with numpy). Any other
        matplotlib colormap name or a matplotlib ``Colormap`` needs matplotlib.

    Returns
    -------
    blended : ndarray of shape (height, width, 3), dtype uint8
        An RGB image, ready for ``PIL.Image.fromarray(blended).save("cam.png")``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convfeat import overlay
    >>> image = np.full((40, 60, 3), 128, dtype=np.uint8)
    >>> heatmap = np.zeros((5, 5)); heatmap[0, 0] = 1.0
    >>> blended = overlay(image, heatmap, alpha=0.5)
    >>> blended.shape, blended.dtype
    ((40, 60, 3), dtype('uint8'))
    >>> blended[0, 0].tolist(), blended[-1, -1].tolist()  # dark red on hot, blue on cold
    ([128, 64, 64], [64, 64, 128])
    """
    pixels = _as_picture(image)
    heat = check_heatmap(heatmap, "heatmap")
    if heat.shape != pixels.shape[:2]:
        heat = resize_map(heat, pixels.shape[:2])
    colours = colorize(np.clip(heat, 0.0, 1.0), colormap) * 255.0
    blended = (1.0 - alpha) * pixels + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


class CamDisplay:
    """Heatmaps of a model with what they explain, and a figure of them.

    Build it with :meth:`from_estimator` (computes the heatmaps once), then draw it
    with :meth:`plot`: one row per image, image | heatmap | overlay. The scikit-learn
    Display pattern: the attributes keep everything needed to draw again.

    Parameters
    ----------
    heatmaps : list of ndarray
        One (height, width) heatmap in [0, 1] per image.
    images : list of ndarray
        The images, (height, width, 3) in [0, 255], as drawn.
    labels : ndarray of shape (n_images,)
        The class each heatmap explains.
    probabilities : ndarray of shape (n_images,)
        The model's probability of that class on the intact image.
    method : str, default="gradcam"
        The method's name, the heatmap column's title.

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
        The figure of the last :meth:`plot`.
    axes_ : ndarray of matplotlib Axes, shape (n_images, 3)

    Examples
    --------
    >>> import numpy as np
    >>> import keras
    >>> from sklearn_convfeat import CamDisplay
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2, activation="softmax"),
    ... ])
    >>> image = np.random.default_rng(0).uniform(0, 255, size=(16, 16, 3))
    >>> display = CamDisplay.from_estimator(model, image[None], target=1, plot=False)
    >>> display.heatmaps[0].shape, display.labels.tolist()
    ((16, 16), [1])
    """

    def __init__(self, heatmaps, images, labels, probabilities, *, method="gradcam"):
        self.heatmaps = heatmaps
        self.images = images
        self.labels = labels
        self.probabilities = probabilities
        self.method = method

    @classmethod
    def from_estimator(cls, model, X, *, target="predicted", layer=None, method="gradcam",
                       plot=True, alpha=0.4, colormap="jet", **options):
        """Compute the heatmaps of ``model`` on ``X`` and, with ``plot=True``, draw them.

        Parameters
        ----------
        model, X, target, layer, method
            As for :func:`cam`.
        plot : bool, default=True
            Draw the figure (:meth:`plot`) right away.
        alpha, colormap
            As for :func:`overlay`, when ``plot=True``.
        **options : dict
            The other keywords of :func:`cam` (``max_channels``, ``batch_size``,
            ``n_samples``, ``noise``, ``aug_smooth``, ``random_state``).

        Returns
        -------
        display : CamDisplay
            The heatmaps, images, explained classes and their probabilities.
        """
        explained = explain_images(model, X, target=target, layer=layer,
                                       method=method, **options)
        heatmaps = explained.heatmaps
        if explained.single:
            heatmaps = [heatmaps]
        images = [original(explained.images, i) for i in range(len(explained.images))]
        rows = np.arange(len(images))
        display = cls(
            list(heatmaps), images, explained.classes[explained.targets],
            explained.proba[rows, explained.targets], method=method,
        )
        if plot:
            display.plot(alpha=alpha, colormap=colormap)
        return display

    def plot(self, *, alpha=0.4, colormap="jet", path=None):
        """Draw image | heatmap | overlay rows.

        Needs matplotlib. The figure is not registered with pyplot: it is freed like
        any object.

        Parameters
        ----------
        alpha, colormap
            As for :func:`overlay`.
        path : str or os.PathLike, default=None
            Where to save the figure as well; the file ending picks the format.

        Returns
        -------
        self : CamDisplay
            With ``figure_`` and ``axes_`` set.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "Plotting needs matplotlib: pip install matplotlib (or the package's "
                "'plot' extra). cam() and overlay() work without it."
            ) from exc
        n_images = len(self.heatmaps)
        figure = Figure(figsize=(9.0, 3.2 * n_images), layout="constrained")
        axes = figure.subplots(n_images, 3, squeeze=False)
        for i in range(n_images):
            picture = displayable(self.images[i])
            axes[i, 0].imshow(picture)
            axes[i, 0].set_title(f"{self.labels[i]!s} (p={self.probabilities[i]:.2f})")
            axes[i, 1].imshow(self.heatmaps[i], vmin=0.0, vmax=1.0,
                              cmap=colormap if isinstance(colormap, str) else None)
            axes[i, 1].set_title(self.method)
            axes[i, 2].imshow(overlay(picture, self.heatmaps[i], alpha=alpha,
                                      colormap=colormap))
            axes[i, 2].set_title("overlay")
            for ax in axes[i]:
                ax.set_axis_off()
        if path is not None:
            figure.savefig(os.fspath(path))
        self.figure_, self.axes_ = figure, axes
        return self


def plot_cam(model, X, heatmaps=None, *, target="predicted", layer=None,
             method="gradcam", max_channels=64, alpha=0.4, colormap="jet", path=None):
    """A matplotlib figure: each image, its heatmap and the overlay, side by side.

    A shortcut for ``CamDisplay.from_estimator(...).figure_``. Needs matplotlib.

    Parameters
    ----------
    model, X, target, layer, method, max_channels
        As for :func:`cam`.
    heatmaps : ndarray or list of ndarray, default=None
        Heatmaps already computed by :func:`cam` for ``X`` and ``target``; None
        computes them.
    alpha, colormap
        As for :func:`overlay`.
    path : str or os.PathLike, default=None
        Also save the figure there (format from the extension, e.g. ``.png``).

    Returns
    -------
    figure : matplotlib.figure.Figure
        One row per image, titled with the explained class and its probability.
    """
    from ._inputs import check_heatmaps

    display = CamDisplay.from_estimator(
        model, X, target=target, layer=layer, method=method, max_channels=max_channels,
        plot=False,
    ) if heatmaps is None else None
    if display is None:
        # Given heatmaps: only the classes and probabilities are computed.
        display = CamDisplay.from_estimator(model, X, target=target, layer=layer,
                                            method="eigencam", plot=False)
        display.heatmaps = check_heatmaps(heatmaps, display.images,
                                          np.ndim(heatmaps) == 2)
        display.method = "heatmap"
    return display.plot(alpha=alpha, colormap=colormap, path=path).figure_


def displayable(picture):
    """uint8 for display (imshow clips float RGB to [0, 1]), whatever range a Keras
    model's input has."""
    picture = np.asarray(picture, dtype=np.float32)
    low, high = float(picture.min()), float(picture.max())
    if low >= 0 and high <= 1.0:
        picture = picture * 255.0
    elif low < 0 or high > 255:
        picture = (picture - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _as_picture(image):
    """An overlay's image as float (H, W, 3) in [0, 255]."""
    if isinstance(image, (str, os.PathLike)):
        return decode_image(os.fspath(image)).astype(np.float32)
    pixels = np.asarray(image)
    if (pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4)) or pixels.ndim == 2:
        return to_rgb(pixels[np.newaxis])[0]
    raise ValueError(
        "`image` must be one image of shape (height, width), (height, width, 3) or "
        f"(height, width, 1|4), or a file path. Got an array of shape {pixels.shape}: "
        "for a batch, overlay each image with its own heatmap."
    )
