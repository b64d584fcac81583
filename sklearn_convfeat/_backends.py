"""The base exported for ONNX Runtime and OpenVINO, cached on disk and in memory.

A *runner* is a callable: float32 RGB images ``(N, H, W, 3)`` in [0, 255] at the size
it was exported for → the cut's raw output as float32 numpy: a convnet's feature map
``(N, h, w, c)``, a vision transformer's tokens ``(N, tokens, width)`` or its image
embedding ``(N, width)``. The preprocessing (a keras-hub preset's ImageConverter
scale and offset included) is inside the exported graph; the caller pools with
``pool_array`` and the extractor's pooling value, whatever the network.

Every source's bases export (keras.applications convnets, one's own models, keras-hub's
DINOv2, ViT, CLIP and SigLIP): TensorFlow's ``Erfc`` (exact GELU), which tf2onnx
lacks, is written as ``1 - erf``, and tensors a graph captures (not variables) become
constants of the ONNX model rather than extra inputs. INT8 quantizes a transformer as
NNCF's transformer model type. A base with more than 2 GiB of weights cannot be one
ONNX file, and is refused with the alternatives before any export.

Exports are built once per (weights sha256, layer, image size, preprocessing, format
version) and kept next to Keras' own cache, in ``$KERAS_HOME/sklearn_convfeat/`` (or
``~/.keras/sklearn_convfeat/``; a temporary folder when that is not writable):

* ``<key>.onnx``: the ONNX model (tf2onnx), written to a temporary file in the same
  folder and moved into place with ``os.replace``;
* ``<key>.openvino/``: the OpenVINO IR (``model.xml`` + ``model.bin``, converted from
  the traced TensorFlow function by ``openvino.convert_model``), written to a temporary
  folder and renamed into place.

Readers therefore only ever see complete files, whatever concurrent or killed processes
did; a file that fails to load anyway (edited, truncated by a full disk) is rebuilt.
Loaded sessions and compiled models are kept in a small process-wide cache, so clones
and repeated ``transform`` calls never re-export or re-compile.
"""

import contextlib
import io
import os
import tempfile
import threading

import numpy as np

from ._architectures import preprocess
from ._backbone import MapsRunner, cut_model, get_base
from ._fast_ops import with_fast_ops
from ._files import remove, remove_stale_temporaries, write_atomic, write_folder_atomic
from ._images import readable_batches
from ._lru import LRUCache

# Bump when the exported graph changes (opset, preprocessing, input layout): old files
# are then ignored rather than loaded.
FORMAT_VERSION = 1
ONNX_OPSET = 17
# Images NNCF calibrates INT8 on: its own default subset size, enough for stable
# activation ranges; more only costs fit time.
MAX_CALIBRATION_IMAGES = 300
# An ONNX model is one protobuf message, which cannot exceed 2 GiB: bases with more
# weights (keras-hub's dinov2_giant, vit_huge, CLIP ViT-bigG towers) do not export.
ONNX_MAX_BYTES = 2**31

BACKENDS = ("tensorflow", "onnxruntime", "openvino")
# backend -> (extra of sklearn-convfeat, modules it needs)
_EXTRAS = {
    "onnxruntime": ("onnx", ("onnxruntime", "tf2onnx", "onnx")),
    "openvino": ("openvino", ("openvino",)),
}

_RUNNERS = LRUCache(max_entries=4)
# One export at a time, whether a runner or INT8 quantization asks for it.
_EXPORT_LOCK = threading.Lock()


def check_backend(backend, quantize=None):
    """Raise an ImportError naming the extra when ``backend``'s packages are missing."""
    if backend == "tensorflow":
        return
    extra, modules = _EXTRAS[backend]
    if quantize == "int8":
        modules = (*modules, "nncf")
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            raise ImportError(
                f"backend={backend!r}"
                f"{' with quantize=' + repr(quantize) if quantize else ''} needs the "
                f"package {module!r}, which is not installed ({exc}). Install the "
                f'extra: pip install "sklearn-convfeat[{extra}]", or use '
                "backend='tensorflow'."
            ) from exc


def cache_dir():
    """The folder of exported models: ``$KERAS_HOME/sklearn_convfeat``.

    ``KERAS_HOME`` defaults to ``~/.keras``, as for Keras' own cache. Falls back to a
    folder in the system's temporary directory when that one cannot be created or
    written, as Keras itself does.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    for root in (home, os.path.join(tempfile.gettempdir(), ".keras")):
        folder = os.path.join(root, "sklearn_convfeat")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    raise OSError(
        f"Cannot create a writable cache folder for exported models under {home!r} "
        "or the temporary directory. Set KERAS_HOME to a writable folder."
    )


def model_key(network, sha256, layer, image_size, preprocessing):
    """File name stem of an export: everything its graph depends on."""
    height, width = image_size
    return (
        f"{network}-{sha256[:20]}-{layer}-{height}x{width}-{preprocessing}"
        f"-v{FORMAT_VERSION}"
    )


def model_path(backend, source, layer, image_size, preprocessing):
    """Where the export of this base, cut and size lives (whether or not it exists)."""
    network = source.plugin.file_label(source)
    key = model_key(
        network, get_base(source).sha256, layer, tuple(image_size), preprocessing
    )
    suffix = {"onnxruntime": ".onnx", "openvino": ".openvino"}[backend]
    return os.path.join(cache_dir(), key + suffix)


def has_export(backend, source, layer, image_size, preprocessing):
    """Whether this export is loaded in this process or already on disk."""
    path = model_path(backend, source, layer, image_size, preprocessing)
    return path in _RUNNERS or os.path.exists(path)


def get_runner(backend, source, layer, image_size, preprocessing):
    """The (cached) runner of ``backend`` for a base, cut, image size and preprocessing.

    Exports the model to the disk cache first if it is not there yet.
    """
    check_backend(backend)
    image_size = tuple(image_size)
    path = model_path(backend, source, layer, image_size, preprocessing)
    load = {"onnxruntime": _onnxruntime_runner, "openvino": _openvino_runner}[backend]
    # Built under the cache's lock: one load per model even when threads race.
    return _RUNNERS.get_or_build(
        path,
        lambda: _load_or_export(
            load, backend, path, source, layer, image_size, preprocessing
        ),
    )


def clear_cache():
    """Forget the loaded sessions and compiled models (the files on disk stay)."""
    _RUNNERS.clear()


def traced_base(source, layer, image_size, preprocessing):
    """A ``tf.function``: images (None, H, W, 3) in [0, 255] → the map at ``layer``.

    The preprocessing is part of it, so exports take raw pixels.

    The spatial size is fixed (the extractor always resizes to it), which lets the
    backends plan their convolutions; the batch size stays free.
    """
    import tensorflow as tf

    cut = with_fast_ops(cut_model(get_base(source), layer), for_export=True)

    signature = tf.TensorSpec((None, *image_size, 3), tf.float32, name="images")

    @tf.function(input_signature=[signature], autograph=False)
    def feature_maps(images):
        return cut(preprocess(images, preprocessing), training=False)

    return feature_maps


def export_onnx(function, path):
    """Export ``function`` (a :func:`traced_base`) to the ONNX file ``path``.

    Written to a temporary file in the same folder, then moved into place.
    """
    import tf2onnx

    function = _captures_as_constants(function)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=ONNX_OPSET,
        custom_op_handlers={"Erfc": (_erfc_as_erf, [])},
    )
    data = proto.SerializeToString()
    write_atomic(path, lambda file: file.write(data), durable=True)


def _captures_as_constants(function):
    """``function`` with the tensors it captures (other than variables) as constants.

    tf2onnx makes each captured tensor an extra input of the ONNX model, which no
    caller feeds (keras-hub's ViT captures its position ids). ``function`` itself when
    it captures only variables, as every keras.applications base does.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = function.get_concrete_function()
    if all(outer.dtype == tf.resource for outer, _ in concrete.graph.captures):
        return function
    frozen = convert_variables_to_constants_v2(concrete)

    @tf.function(input_signature=function.input_signature, autograph=False)
    def feature_maps(images):
        return tf.nest.flatten(frozen(images))[0]

    return feature_maps


def _erfc_as_erf(ctx, node, name, args):
    """tf2onnx's handler of TensorFlow's ``Erfc``, which it lacks: ``1 - erf(x)``.

    Exact GELU is ``0.5·x·erfc(-x/√2)`` in TensorFlow (``tf.nn.gelu``), used inside
    layers the export cannot swap (keras-hub's DINOv2 and ViT blocks, a ``Dense`` with
    ``activation="gelu"``). Where ``1 - erf`` rounds to 0 instead of erfc's tiny value,
    GELU's error is below 1e-7·|x|.
    """
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.ones((), dtype))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=name)
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"
    return node


def export_openvino(function, path):
    """Convert ``function`` to the OpenVINO IR folder ``path``, atomically.

    The folder holds ``model.xml`` and ``model.bin`` (FP32 weights, uncompressed).
    """
    import openvino as ov

    model = ov.convert_model(function)
    write_folder_atomic(
        path,
        lambda folder: ov.save_model(
            model, os.path.join(folder, "model.xml"), compress_to_fp16=False
        ),
    )


def _load_or_export(load, backend, path, *model):
    """``load(path)``, exporting ``model`` there first if missing or unreadable."""
    with _EXPORT_LOCK:
        return _load_or_export_unlocked(load, backend, path, *model)


def _load_or_export_unlocked(load, backend, path, *model):
    if os.path.exists(path):
        try:
            return load(path)
        except Exception:  # noqa: BLE001  unreadable for whatever reason: rebuild it
            remove(path)
    remove_stale_temporaries(path)
    if backend == "onnxruntime":
        check_onnx_size(*model)
    export = export_onnx if backend == "onnxruntime" else export_openvino
    export(traced_base(*model), path)
    return load(path)


def check_onnx_size(source, layer, image_size=None, preprocessing=None):
    """Raise a ValueError naming the alternatives when the base cut at ``layer`` has
    too many weights for one ONNX file (checked before the minutes of an export)."""
    cut = cut_model(get_base(source), layer)
    size = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in cut.weights)
    if size >= ONNX_MAX_BYTES:
        raise ValueError(
            f"backend='onnxruntime' cannot run {source.plugin.display_name(source)} cut "
            f"at {layer!r}: its {size / 2**30:.2f} GiB of weights exceed the "
            f"{ONNX_MAX_BYTES / 2**30:g} GiB an ONNX file holds (one protobuf message). "
            "Use backend='openvino' (its IR has no such limit) or backend='tensorflow', "
            "or cut the base lower (`layer`)."
        )


def physical_cores():
    """Physical cores this process may use (CPU affinity and cgroup quotas included)."""
    import joblib

    return max(1, joblib.cpu_count(only_physical_cores=True))


class OnnxRuntimeRunner(MapsRunner):
    """Raw feature maps from an ONNX Runtime session (``run`` is thread-safe)."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def maps(self, images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run(None, {self.input_name: images})[0]


def _onnxruntime_runner(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One batch at a time through a chain of convolutions: all cores inside each op.
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    if len(session.get_inputs()) != 1:  # an export that leaked a captured tensor
        raise ValueError(f"{path} takes {len(session.get_inputs())} inputs, not 1.")
    return OnnxRuntimeRunner(session)


_CORE = None


def openvino_core():
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def openvino_config():
    """Compile settings: FP32 arithmetic, one stream using every physical core.

    OpenVINO's CPU plugin would otherwise run in bfloat16 on CPUs that have it (AVX512
    BF16, AMX): faster, but about 0.5 % off the TensorFlow features.
    """
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": physical_cores(),
    }


class OpenVINORunner(MapsRunner):
    """Raw feature maps from an OpenVINO compiled model; an infer request per thread."""

    def __init__(self, compiled):
        self.compiled = compiled
        self._local = threading.local()

    def maps(self, images):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        images = np.ascontiguousarray(images, dtype=np.float32)
        # The output tensor is the request's own buffer, reused by the next call.
        return request.infer({0: images})[0].copy()


def _openvino_runner(path):
    compiled = openvino_core().compile_model(
        openvino_model(path), "CPU", openvino_config()
    )
    return OpenVINORunner(compiled)


def openvino_model(path):
    """A fresh ``openvino.Model`` read from an IR folder of the disk cache."""
    return openvino_core().read_model(
        os.path.join(path, "model.xml"), os.path.join(path, "model.bin")
    )


def quantize_int8(
    source, layer, image_size, preprocessing, images, *, batch_size=32,
    on_error="raise", verbose=0,
):
    """NNCF post-training INT8 quantization of the OpenVINO export, as IR bytes.

    Calibrates on :func:`calibration_images` of ``images`` (an image source of
    ``_images``). Returns ``(xml, bin, n_calibration_images)``: the serialized
    quantized model, which :func:`int8_runner` compiles, and how many images it saw.
    """
    import nncf
    import openvino as ov

    calibration = calibration_images(
        images, image_size, batch_size=batch_size, on_error=on_error
    )
    model = (source, layer, tuple(image_size), preprocessing)
    path = model_path("openvino", *model)
    fp32 = _load_or_export(openvino_model, "openvino", path, *model)
    dataset = nncf.Dataset(calibration)
    # A transformer (its cuts output tokens) is quantized as NNCF's transformer type:
    # SmoothQuant, 8-bit matrix products, and the additions, normalisations and
    # multiplications left in FP32. As a plain model, a random tiny DINOv2's INT8
    # features had a cosine similarity down to 0.48 with FP32's (0.9997 this way).
    transformer = get_base(source).prefix_tokens is not None
    # NNCF draws a progress bar on stdout.
    quiet = contextlib.redirect_stdout(io.StringIO())
    settings = dict(
        subset_size=len(calibration), target_device=nncf.TargetDevice.CPU,
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
    )
    with contextlib.nullcontext() if verbose else quiet:
        quantized = nncf.quantize(fp32, dataset, **settings)
        if not _compiles(quantized):
            # EfficientNet: NNCF quantizes some activations per channel along an axis
            # OpenVINO's CPU plugin refuses ("non per-tensor quantization for axis
            # 2"); quantized per tensor, every activation compiles.
            from nncf.quantization.advanced_parameters import (
                AdvancedQuantizationParameters,
                QuantizationParameters,
            )

            per_tensor = AdvancedQuantizationParameters(
                activations_quantization_params=QuantizationParameters(per_channel=False)
            )
            quantized = nncf.quantize(
                fp32, dataset, **settings, advanced_parameters=per_tensor
            )
    with tempfile.TemporaryDirectory() as folder:
        xml_path = os.path.join(folder, "model.xml")
        ov.save_model(quantized, xml_path, compress_to_fp16=False)
        with open(os.path.join(folder, "model.xml"), "rb") as file:
            xml = file.read()
        with open(os.path.join(folder, "model.bin"), "rb") as file:
            weights = file.read()
    return xml, weights, len(calibration)


def _compiles(model):
    """Whether OpenVINO's CPU plugin compiles ``model``."""
    try:
        openvino_core().compile_model(model, "CPU")
    except RuntimeError:
        return False
    return True


def int8_runner(ir):
    """Compile IR bytes ``(xml, bin)`` from :func:`quantize_int8` into a runner."""
    import openvino as ov

    xml, weights = ir
    core = openvino_core()
    model = core.read_model(
        model=xml, weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8))
    )
    return OpenVINORunner(core.compile_model(model, "CPU", openvino_config()))


def calibration_images(images, image_size, *, batch_size=32, on_error="raise"):
    """Up to :data:`MAX_CALIBRATION_IMAGES` of ``images``, evenly spaced, decoded.

    ``images`` is an :class:`~._images.ImageArray` or :class:`~._images.ImageFiles`;
    the result is a list of float32 (1, H, W, 3) batches in [0, 255] at ``image_size``,
    decoded as ``transform`` decodes them. Unreadable files are left out when
    ``on_error="skip"``.
    """
    count = min(len(images), MAX_CALIBRATION_IMAGES)
    rows = np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))
    calibration = []
    batches = readable_batches(images.subset(rows), batch_size, image_size, on_error)
    for _, decoded, _ in batches:
        calibration += [decoded[k : k + 1] for k in range(len(decoded))]
    if not calibration:
        raise ValueError(
            "quantize='int8' calibrates on the images given to fit, but none of the "
            f"{len(rows)} sampled ones could be read. Fit on readable images."
        )
    return calibration
