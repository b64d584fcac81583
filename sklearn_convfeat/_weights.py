"""Where a base gets its weights: Keras' ImageNet download, a local file, or a seed.

The result of resolution is a :class:`WeightsSource`, a small hashable record that is
enough to rebuild the identical base later (after unpickling, in another process).
"""

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from ._architectures import (
    build_architecture,
    canonical_names,
    hash_weights,
    keras_weights_file,
)

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
    """How to obtain a base: its network and its weights.

    ``architecture`` is a keras.applications constructor name, or None for a model of
    one's own, whose ``.keras`` bytes are ``model_data`` (identified by
    ``model_sha256``, over its configuration and weights). ``kind`` is
    ``"imagenet"`` (Keras' own download and cache; for one's own model, the weights
    it came with), ``"file"`` (``path``) or ``"random"`` (Glorot-uniform kernels drawn
    from ``seed``). ``input_size`` fixes the base's input size, for networks that
    need one (NASNet); None builds one base for every size.
    """

    kind: str
    path: str | None = None
    seed: int | None = None
    architecture: str | None = "VGG16"
    input_size: tuple | None = None
    model_sha256: str | None = None
    model_data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def network(self):
        if self.architecture is not None:
            return self.architecture
        return f"the backbone model {self.model_sha256[:12]}…"

    def describe(self):
        if self.kind == "file":
            return repr(self.path)
        if self.kind == "random":
            return f"random initialisation (seed {self.seed})"
        if self.architecture is None:
            return "the backbone model's own weights"
        return f"{self.architecture} ImageNet weights from Keras' cache"


def resolve_weights(weights, seed, architecture="VGG16", model=None, input_size=None):
    """Turn the ``weights`` parameter into a :class:`WeightsSource`.

    ``model`` is ``(sha256, keras bytes)`` of one's own backbone (``architecture``
    None). ``weights="imagenet"`` then means the model's own weights; for a
    keras.applications network it uses ``SKLEARN_CONVFEAT_WEIGHTS`` when that variable
    is set (a file: the VGG16 weights; a folder: files under Keras' own names) and
    Keras' download-and-cache otherwise.
    """
    network = {"architecture": architecture, "input_size": input_size}
    if model is not None:
        network.update(model_sha256=model[0], model_data=model[1])
    if weights is None:
        return WeightsSource("random", seed=int(seed), **network)
    if isinstance(weights, str) and weights == "imagenet":
        path = None if architecture is None else local_imagenet_file(architecture)
        if path is None:
            return WeightsSource("imagenet", **network)
        return WeightsSource("file", path=path, **network)
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
            "`model.save_weights('base_notop.weights.h5')`."
        )
    return WeightsSource("file", path=path, **network)


def local_imagenet_file(architecture):
    """The local ImageNet weights ``SKLEARN_CONVFEAT_WEIGHTS`` names for
    ``architecture``, or None to go through Keras' download and cache."""
    override = os.environ.get(WEIGHTS_ENV_VAR)
    if not override:
        return None
    path = os.path.abspath(os.path.expanduser(override))
    if os.path.isdir(path):
        candidate = os.path.join(path, keras_weights_file(architecture))
        return candidate if os.path.isfile(candidate) else None
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"The environment variable {WEIGHTS_ENV_VAR} points weights='imagenet' "
            f"at {override!r}, which is neither a file nor a folder. Set it to the path "
            "of the VGG16 notop weights file (.h5 / .weights.h5), or of a folder of "
            "weights files under Keras' own names, or unset it to let Keras download "
            "the weights."
        )
    # A single file has always meant the VGG16 base.
    return path if architecture == "VGG16" else None


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


def build_base(source, input_size=None, weights=None):
    """A fresh convolutional base (``include_top=False``) with the source's weights.

    Its input is ``(None, None, 3)``, one model for every image size, unless
    ``input_size`` (default: ``source.input_size``) fixes it (networks such as NASNet
    that need a static size). ``weights`` (a list of arrays, e.g. a cached base's)
    replaces the source's: an independent copy to train. Automatically named layers
    are numbered as in a fresh process.
    """
    size = source.input_size if input_size is None else tuple(input_size)
    if source.architecture is None:
        from ._architectures import own_model_copy

        model = own_model_copy(source.model_data, size)
    else:
        model = _build_application(source, size, imagenet=weights is None)
    if weights is not None:
        model.set_weights(weights)
    elif source.kind == "random":
        model.set_weights(_glorot_uniform_weights(model, source.seed))
    elif source.kind == "file":
        _load_file(model, source)
    return canonical_names(model, rename_layers=source.architecture is not None)


def _build_application(source, input_size, imagenet=True):
    shape = (*(input_size or (None, None)), 3)
    if source.kind != "imagenet" or not imagenet:
        return build_architecture(source.architecture, input_shape=shape)
    try:
        return build_architecture(source.architecture, "imagenet", input_shape=shape)
    except Exception as exc:  # Keras raises plain Exception on URL failures
        name = keras_weights_file(source.architecture)
        raise WeightsUnavailableError(
            f"Could not obtain the ImageNet {source.architecture} weights through Keras "
            f"({exc}). Without internet access, either pass the path of a local copy, "
            f"weights='/path/to/{name}', or put it under that name in "
            f"~/.keras/models/ (Keras' cache, used offline) or in a folder named by "
            f"the environment variable {WEIGHTS_ENV_VAR}. The file is what "
            f"keras.applications.{source.architecture}(weights='imagenet', "
            "include_top=False) downloads, or any Model.save_weights() of that base."
        ) from exc


def _load_file(model, source):
    import keras

    try:
        if source.path.endswith(".keras"):
            model.set_weights(keras.saving.load_model(source.path, compile=False).get_weights())
        else:
            model.load_weights(source.path)
    except Exception as exc:
        ours = sum(int(np.prod(w.shape)) for w in model.weights)
        theirs = _file_network(source.path)
        raise ValueError(
            f"`weights` file {source.path!r} does not hold the weights of the "
            f"{source.network} convolutional base ({len(model.weights)} arrays, {ours:,} "
            f"parameters, include_top=False){theirs}: {exc}. Pass a file saved from "
            f"that base (Model.save_weights), or choose the backbone the file was "
            "saved from."
        ) from exc


def _file_network(path):
    """", which look like the weights of <network>", as far as the file tells."""
    from ._architectures import ARCHITECTURES, identify_by_parameters

    name = os.path.basename(path)
    for architecture in ARCHITECTURES:
        if name == keras_weights_file(architecture):
            return f"; the file is Keras' {architecture} weights"
    try:
        import h5py

        sizes = []
        with h5py.File(path, "r") as file:
            file.visititems(
                lambda _, item: sizes.append(item.size)
                if isinstance(item, h5py.Dataset) else None
            )
    except Exception:  # noqa: BLE001  not an HDF5 file: nothing more to say
        return ""
    total = int(sum(sizes))
    guess = identify_by_parameters(total)
    return (
        f"; the file holds {len(sizes)} arrays, {total:,} parameters"
        + (f", like the {guess} base" if guess else "")
    )


def content_sha256(model):
    """sha256 over the model's weight arrays (float32 little-endian, in order)."""
    return hash_weights(hashlib.sha256(), model).hexdigest()


def _glorot_uniform_weights(model, seed):
    # Kernels are drawn with numpy rather than Keras initialisers so the values depend
    # on the seed only, never on Keras' global random state. Every other array keeps
    # the constant it is initialised to (biases 0, BatchNormalization's scale and
    # variance 1, LayerScale's 1e-6), so random networks still pass signals through.
    rng = np.random.default_rng(seed)
    depthwise = _depthwise_kernels(model)
    arrays = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) < 2 or not variable.trainable:
            arrays.append(np.asarray(variable.numpy(), dtype="float32"))
            continue
        receptive = int(np.prod(shape[:-2]))
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        if id(variable) in depthwise:  # each channel is filtered on its own
            fan_in, fan_out = receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        arrays.append(rng.uniform(-limit, limit, size=shape).astype("float32"))
    return arrays


def _depthwise_kernels(model):
    """ids of the depthwise kernels in ``model`` (nested models included)."""
    import keras

    found = set()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found |= _depthwise_kernels(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            found.add(id(layer.kernel))
        elif isinstance(layer, keras.layers.SeparableConv2D):
            found.add(id(layer.depthwise_kernel))
    return found
