"""Where a base gets its weights: Keras' ImageNet download, a local file, or a seed.

The result of resolution is a :class:`WeightsSource`, a small hashable record that is
enough to rebuild the identical base later (after unpickling, in another process).
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._architectures import canonical_names, hash_weights
from ._backbones import identify_by_parameters, source_named

WEIGHTS_ENV_VAR = "SKLEARN_CONVFEAT_WEIGHTS"
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")
# What a SKLEARN_CONVFEAT_WEIGHTS naming one file holds: (backbone source, network).
_SINGLE_FILE = ("keras.applications", "VGG16")

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

    The network fields are those of :class:`~._backbones.Network`:
    ``backbone_source`` names the registered source that builds it (:attr:`plugin`);
    ``architecture`` is a keras.applications constructor name, or None for a model
    of one's own, whose ``.keras`` bytes are ``model_data`` (identified by
    ``model_sha256``, over its configuration and weights). ``kind`` is
    ``"imagenet"`` (the source's pretrained weights: Keras' own download and cache;
    for one's own model, the weights it came with), ``"file"`` (``path``) or
    ``"random"`` (Glorot-uniform kernels drawn from ``seed``). ``input_size`` fixes
    the base's input size, for networks that need one (NASNet); None builds one base
    for every size.
    """

    kind: str
    path: str | None = None
    seed: int | None = None
    architecture: str | None = "VGG16"
    input_size: tuple | None = None
    model_sha256: str | None = None
    model_data: bytes | None = field(default=None, compare=False, repr=False)
    backbone_source: str | None = None

    def __post_init__(self):
        if self.backbone_source is None:
            object.__setattr__(self, "backbone_source", _implied_source(self))

    def __setstate__(self, state):
        # Records pickled before sources were plug-ins name none.
        self.__dict__.update(state)
        if self.__dict__.get("backbone_source") is None:
            object.__setattr__(self, "backbone_source", _implied_source(self))

    @property
    def plugin(self):
        """The :class:`~._backbones.BackboneSource` that builds this network."""
        return source_named(self.backbone_source)

    @property
    def network(self):
        return self.plugin.display_name(self)

    def describe(self):
        if self.kind == "file":
            return repr(self.path)
        if self.kind == "random":
            return f"random initialisation (seed {self.seed})"
        return self.plugin.pretrained_description(self)


def _implied_source(record):
    """The source of a record made without one: the two that predate plug-ins."""
    return "keras.Model" if record.model_sha256 is not None else "keras.applications"


def resolve_weights(
    weights, seed, architecture="VGG16", model=None, input_size=None, *, network=None
):
    """Turn the ``weights`` parameter into a :class:`WeightsSource`.

    ``network`` is the :class:`~._backbones.Network` the ``backbone`` resolved to;
    without it, ``architecture`` names a keras.applications network, or is None for
    one's own backbone, ``model`` its ``(sha256, keras bytes)``. ``weights="imagenet"``
    means the source's pretrained weights: a model's own; for a keras.applications
    network, the file ``SKLEARN_CONVFEAT_WEIGHTS`` names when that variable is set (a
    file: the VGG16 weights; a folder: files under Keras' own names) and Keras'
    download-and-cache otherwise.
    """
    if network is not None:
        network = network._asdict()
    else:
        network = {"architecture": architecture, "input_size": input_size}
        if model is not None:
            network.update(model_sha256=model[0], model_data=model[1])
    if weights is None:
        return WeightsSource("random", seed=int(seed), **network)
    if isinstance(weights, str) and weights == "imagenet":
        pretrained = WeightsSource("imagenet", **network)
        path = local_imagenet_file(pretrained)
        if path is None:
            return pretrained
        return dataclasses.replace(pretrained, kind="file", path=path)
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


def local_imagenet_file(source):
    """The local pretrained weights ``SKLEARN_CONVFEAT_WEIGHTS`` names for the network
    of ``source`` (a :class:`WeightsSource`), or None to go through its backbone
    source (Keras' download and cache)."""
    name = source.plugin.weights_file_name(source)
    override = os.environ.get(WEIGHTS_ENV_VAR)
    if not override or name is None:
        return None
    path = os.path.abspath(os.path.expanduser(override))
    if os.path.isdir(path):
        candidate = os.path.join(path, name)
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
    return path if (source.backbone_source, source.architecture) == _SINGLE_FILE else None


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
    plugin = source.plugin
    pretrained = source.kind == "imagenet" and weights is None
    model = plugin.build(source, size, pretrained=pretrained)
    if weights is not None:
        model.set_weights(weights)
    elif source.kind == "random":
        model.set_weights(_glorot_uniform_weights(model, source.seed))
    elif source.kind == "file":
        _load_file(model, source)
    return canonical_names(model, rename_layers=plugin.renames_layers)


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
    target = source.plugin.base_description(source, model)
    origin = f"`weights` file {source.path!r}"
    from_environment = _names_file(source, source.path)
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
        fix = source.plugin.environment_file_fix(source)
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


def _names_file(source, path):
    """Whether ``SKLEARN_CONVFEAT_WEIGHTS`` gives ``path`` for ``source``'s network."""
    try:
        return local_imagenet_file(source) == path
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
