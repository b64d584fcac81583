"""Where a base gets its weights: Keras' ImageNet download, a local file, or a seed.

The result of resolution is a :class:`WeightsSource`, a small hashable record that is
enough to rebuild the identical base later (after unpickling, in another process).
"""

import contextlib
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._architectures import (
    build_architecture,
    canonical_names,
    hash_weights,
    identify_by_parameters,
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
    try:
        with _keras_notices_held():
            _read_weights_file(model, source.path)
    except Exception as exc:
        raise ValueError(_mismatch_message(model, source)) from exc


def _read_weights_file(model, path):
    import keras

    if path.endswith(".keras"):
        model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
        return
    # Keras picks the format by the suffix (*.weights.h5: Keras 3's, any other .h5:
    # Keras 2's); a file renamed across the two is read by its content instead.
    layout = _h5_layout(path)
    if layout is None or layout == ("keras3" if path.endswith(".weights.h5") else "legacy"):
        model.load_weights(path)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sklearn_convfeat_") as folder:
        alias = os.path.join(folder, "base.weights.h5" if layout == "keras3" else "base.h5")
        try:
            os.symlink(path, alias)
        except OSError:  # no symlinks (Windows without the privilege): a copy
            import shutil

            shutil.copyfile(path, alias)
        model.load_weights(alias)


@contextlib.contextmanager
def _keras_notices_held():
    """Hold back Keras' warnings and absl log records while a file loads: shown after
    a successful load, dropped after a failed one (one per layer, said by our error)."""
    logger = logging.getLogger("absl")
    records = []
    holder = logging.Handler()
    holder.emit = records.append
    handlers, propagate = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [holder], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    for notice in caught:
        warnings.warn_explicit(
            notice.message, notice.category, notice.filename, notice.lineno,
            source=notice.source,
        )
    for record in records:
        logger.handle(record)


def _mismatch_message(model, source):
    """One sentence: which network, what the file holds instead, and the fix."""
    ours = sum(int(np.prod(w.shape)) for w in model.weights)
    if source.architecture is not None:
        target = f"the {source.architecture} convolutional base (include_top=False)"
    else:
        target = f"the `backbone` model {model.name!r}"
    origin = f"`weights` file {source.path!r}"
    from_environment = source.architecture is not None and _names_file(
        source.architecture, source.path
    )
    if from_environment:
        origin = (
            f"The weights file {source.path!r} that {WEIGHTS_ENV_VAR} names for "
            "weights='imagenet'"
        )
    arrays, parameters = _file_contents(source.path)
    if arrays is None:
        holds = "no weights Keras can read (it is not an HDF5 file or .keras archive)"
        guess = None
    else:
        guess = identify_by_parameters(parameters)
        holds = f"{arrays} arrays, {parameters:,} parameters" + (
            f": those of the {guess} base" if guess else ""
        )
        if parameters == ours:  # same size, other layout (layer order, a nested model)
            holds += ", as many, but Keras could not match them to the base's layers"
    if from_environment:
        fix = (
            f"Put the {source.architecture} notop weights there (what keras.applications."
            f"{source.architecture}(weights='imagenet', include_top=False) downloads), "
            f"or remove the file to let Keras download them."
        )
    elif guess is not None and guess != source.architecture:
        fix = (
            f"Pass backbone={guess!r} to use this file, or a file saved from that "
            "network with Model.save_weights()."
        )
    else:
        fix = (
            "Pass a file saved from that network with Model.save_weights(), or the "
            "backbone the file was saved from."
        )
    return (
        f"{origin} does not fit {target}, which has {len(model.weights)} arrays, "
        f"{ours:,} parameters; the file holds {holds}. {fix}"
    )


def _names_file(architecture, path):
    """Whether ``SKLEARN_CONVFEAT_WEIGHTS`` gives ``path`` for ``architecture``."""
    try:
        return local_imagenet_file(architecture) == path
    except WeightsUnavailableError:
        return False


def _h5_layout(path):
    """``"keras3"`` (Model.save_weights to *.weights.h5), ``"legacy"`` (Keras 2's
    .h5) or None (not HDF5, or neither)."""
    try:
        import h5py

        with h5py.File(path, "r") as file:
            if "layer_names" in file.attrs or "model_weights" in file:
                return "legacy"
            if "layers" in file or "vars" in file:
                return "keras3"
    except Exception:  # noqa: BLE001  not HDF5: Keras says so itself
        pass
    return None


def _file_contents(path):
    """(arrays, parameters) of the network weights in a file, as far as its content
    tells (an optimizer's state aside); (None, None) when it is not HDF5."""
    import h5py

    sizes = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer"):
            sizes.append(item.size)

    try:
        if path.endswith(".keras"):
            import io
            import zipfile

            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read("model.weights.h5"))
            file = h5py.File(data, "r")
        else:
            file = h5py.File(path, "r")
        with file:
            root = file["model_weights"] if "model_weights" in file else file
            root.visititems(visit)
    except Exception:  # noqa: BLE001  not a weights file at all
        return None, None
    return len(sizes), int(sum(sizes))


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
