"""Where the VGG16 base gets its weights: Keras' ImageNet download, a local file, or a seed.

The result of resolution is a :class:`WeightsSource`, a small hashable record that is
enough to rebuild the identical base later (after unpickling, in another process).
"""

import hashlib
import os
from dataclasses import dataclass

import numpy as np

WEIGHTS_ENV_VAR = "SKLEARN_CONVFEAT_WEIGHTS"
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")

# sha256 of the 26 float32 arrays of the ImageNet VGG16 conv base (little-endian, in
# `model.weights` order); a file re-saved by Keras keeps this even when its bytes change.
IMAGENET_CONTENT_SHA256 = (
    "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
)


class WeightsUnavailableError(OSError):
    """The ImageNet weights could neither be downloaded nor found locally."""


@dataclass(frozen=True)
class WeightsSource:
    """How to obtain the base's weights.

    ``kind`` is ``"imagenet"`` (Keras' own download and cache), ``"file"`` (``path``)
    or ``"random"`` (Glorot-uniform kernels drawn from ``seed``, zero biases).
    """

    kind: str
    path: str | None = None
    seed: int | None = None

    def describe(self):
        if self.kind == "file":
            return repr(self.path)
        if self.kind == "random":
            return f"random initialisation (seed {self.seed})"
        return "ImageNet weights from Keras' cache"


def resolve_weights(weights, seed):
    """Turn the ``weights`` parameter into a :class:`WeightsSource`.

    ``weights="imagenet"`` uses the file named by ``SKLEARN_CONVFEAT_WEIGHTS`` when that
    variable is set (air-gapped machines) and Keras' download-and-cache otherwise.
    """
    if weights is None:
        return WeightsSource("random", seed=int(seed))
    if isinstance(weights, str) and weights == "imagenet":
        override = os.environ.get(WEIGHTS_ENV_VAR)
        if not override:
            return WeightsSource("imagenet")
        path = os.path.abspath(os.path.expanduser(override))
        if not os.path.isfile(path):
            raise WeightsUnavailableError(
                f"The environment variable {WEIGHTS_ENV_VAR} points weights='imagenet' "
                f"at {override!r}, which is not a file. Set it to the path of the "
                "VGG16 notop weights file (.h5 / .weights.h5), or unset it to let "
                "Keras download the weights."
            )
        return WeightsSource("file", path=path)
    path = os.path.abspath(os.path.expanduser(os.fspath(weights)))
    if not os.path.isfile(path):
        raise ValueError(
            "`weights` must be 'imagenet', None, or the path of an existing weights "
            f"file ({', '.join(WEIGHTS_SUFFIXES)}). Got {weights!r}, which is not a "
            "file: check the path, or use weights='imagenet'."
        )
    if not path.endswith(WEIGHTS_SUFFIXES):
        raise ValueError(
            f"`weights` file must end in one of {WEIGHTS_SUFFIXES} (a Keras weights "
            f"file). Got {weights!r}. Save the base with "
            "`model.save_weights('vgg16_notop.weights.h5')`."
        )
    return WeightsSource("file", path=path)


def check_weights(weights):
    """Check a ``weights`` parameter value without loading any weights.

    The estimators accept the same values and run the same check in ``fit``; this
    lets a script or a command line refuse a typo before any work starts.

    Parameters
    ----------
    weights : "imagenet", None, str or os.PathLike
        As the estimators' ``weights``.

    Returns
    -------
    path : str or None
        The local weights file that would be read (for ``"imagenet"``, the file
        ``SKLEARN_CONVFEAT_WEIGHTS`` names, if set), or None for Keras' download and
        cache or random weights.

    Raises
    ------
    ValueError
        If ``weights`` names no file, or a file that is not a Keras weights file.
    OSError
        If ``SKLEARN_CONVFEAT_WEIGHTS`` names no file.

    Examples
    --------
    >>> from sklearn_convfeat import check_weights
    >>> check_weights(None) is None
    True
    >>> check_weights("no/such/file.h5")
    Traceback (most recent call last):
    ...
    ValueError: `weights` must be 'imagenet', None, or the path of an existing ...
    """
    return resolve_weights(weights, seed=0).path


def build_vgg16_base(source):
    """A fresh ``keras.applications.VGG16(include_top=False)`` with the source's weights.

    The input is ``(None, None, 3)``: one model serves every image size.
    """
    import keras

    if source.kind == "imagenet":
        try:
            return keras.applications.VGG16(
                weights="imagenet", include_top=False, input_shape=(None, None, 3)
            )
        except Exception as exc:  # Keras raises plain Exception on URL failures
            raise WeightsUnavailableError(
                f"Could not obtain the ImageNet VGG16 weights through Keras ({exc}). "
                "Without internet access, either pass the path of a local copy, "
                "weights='/path/to/vgg16_notop.weights.h5', or keep weights='imagenet' "
                f"and set the environment variable {WEIGHTS_ENV_VAR} to that path. "
                "The file is what keras.applications.VGG16(weights='imagenet', "
                "include_top=False) downloads into ~/.keras/models/, or any "
                "Model.save_weights() of that base."
            ) from exc

    model = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    if source.kind == "random":
        model.set_weights(_glorot_uniform_weights(model, source.seed))
        return model
    try:
        if source.path.endswith(".keras"):
            model.set_weights(keras.saving.load_model(source.path).get_weights())
        else:
            model.load_weights(source.path)
    except Exception as exc:
        raise ValueError(
            f"`weights` file {source.path!r} does not hold the weights of the VGG16 "
            f"convolutional base (13 conv layers, include_top=False): {exc}. Pass a "
            "file saved from keras.applications.VGG16(include_top=False), or "
            "weights='imagenet'."
        ) from exc
    return model


def content_sha256(model):
    """sha256 over the model's weight arrays (float32 little-endian, in order)."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def _glorot_uniform_weights(model, seed):
    # Drawn with numpy rather than Keras initialisers so the values depend on the seed
    # only, never on Keras' global random state.
    rng = np.random.default_rng(seed)
    arrays = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) == 1:
            arrays.append(np.zeros(shape, dtype="float32"))
            continue
        receptive = int(np.prod(shape[:-2]))
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        arrays.append(rng.uniform(-limit, limit, size=shape).astype("float32"))
    return arrays
