"""What ``backend="auto"`` runs: the fastest installed exact backend for the network.

The rule is a table of network families per kind of CPU, measured with
``benchmarks/bench_backbones.py`` (every family on every backend in one run, 224 px,
160 JPEG paths and decoded arrays; ``derive_auto_rules`` there turns the rows into
this table, kept in the results file as ``auto_rules``). A family is listed when an
exported backend ran at least 1.1x TensorFlow's images/s from paths and from arrays.
The other families (VGG, ResNetV2, EfficientNet on AVX-512, Inception, Xception,
NASNet, ConvNeXt on AVX-512), keras-hub's transformers and one's own models stay on
TensorFlow, which was as fast or faster for them and exports nothing. TensorFlow
runs every family with its batch norms folded into the convolutions (``_fast_ops``),
which is why so few families gain from an export on an AVX-512 CPU.

Exports cost seconds to a minute, once per weights, cut, image size and preprocessing
(they are kept on disk for every later process, see :mod:`._backends`). So an exported
backend is picked only when its export is already there or when the images ``fit``
sees are enough for the faster forward pass to pay for exporting: a small job is never
slower end to end than on TensorFlow. Features from every backend equal TensorFlow's
within 1e-4 relative, so the choice changes the speed, not the results.
"""

import functools
import warnings

from . import _backends
from ._backbone import TensorFlowRunner

# cpu kind -> family -> (exported backends fastest first, images at 224 px that pay for
# the export: its seconds over the seconds saved per image, times 2 for slower CPUs).
AUTO_RULES = {
    # benchmarks/results/bench_backbones_backends.json: 2-core AMD EPYC, AVX-512.
    "avx512": {
        "resnet": (("openvino",), 900),  # ResNet50 1.17x
        "mobilenet_v2": (("onnxruntime",), 1500),  # MobileNetV2 1.35x
        "mobilenet_v3": (("openvino",), 4600),  # MobileNetV3Large 1.15x
        "efficientnet_v2": (("onnxruntime",), 4100),  # EfficientNetV2B0 1.27x
        "densenet": (("openvino", "onnxruntime"), 1000),  # DenseNet121 1.23x
    },
    # benchmarks/results/bench_backbones.json and _exported.json: 2-core AMD EPYC,
    # AVX2 only, before batch norms were folded (TensorFlow was then 1.1-1.3x slower
    # on these families); break-evens with the AVX-512 run's export seconds x 1.5.
    "avx2": {
        "efficientnet": (("onnxruntime",), 900),  # EfficientNetB0 2.6x
        "mobilenet_v3": (("openvino", "onnxruntime"), 600),  # MobileNetV3Large 3.1x
        "convnext": (("openvino", "onnxruntime"), 150),  # ConvNeXtTiny 1.8x
    },
}
REFERENCE_PIXELS = 224 * 224


@functools.cache
def cpu_kind():
    """``"avx512"``, ``"avx2"`` or None (no measured rule: TensorFlow), from the
    CPU's flags in ``/proc/cpuinfo`` (Linux; elsewhere None)."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next(
                (line.split(":", 1)[1].split() for line in file if line.startswith("flags")),
                [],
            )
    except OSError:
        return None
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else None


def installed(backend):
    """Whether ``backend``'s packages import here."""
    try:
        _backends.check_backend(backend)
    except ImportError:
        return False
    return True


def choose_backend(source, layer, image_size, preprocessing, n_images, quantize=None):
    """The backend ``backend="auto"`` runs for this base, cut and size.

    ``n_images``: how many images ``fit`` was given, the size of the job that would
    pay for an export. ``quantize="int8"`` needs OpenVINO, whatever the family.
    """
    if quantize == "int8":
        return "openvino"
    rule = AUTO_RULES.get(cpu_kind(), {}).get(source.plugin.speed_family(source))
    if rule is None:
        return "tensorflow"
    backends, break_even_224 = rule
    candidates = [backend for backend in backends if installed(backend)]
    for backend in candidates:  # an export already made costs nothing
        if _backends.has_export(backend, source, layer, image_size, preprocessing):
            return backend
    if not candidates:
        return "tensorflow"
    # Per-image time grows with the pixels, the export's does not.
    height, width = image_size
    break_even = break_even_224 * REFERENCE_PIXELS / (height * width)
    return candidates[0] if n_images >= break_even else "tensorflow"


def make_runner(backend, source, layer, image_size, preprocessing, quantized_ir=None):
    """The runner (see :mod:`._backends`) of ``backend`` for this base, cut and size;
    an INT8 model's when ``quantized_ir`` (from ``quantize_int8``) is given."""
    if quantized_ir is not None:
        return _backends.int8_runner(quantized_ir)
    if backend == "tensorflow":
        return TensorFlowRunner(source, layer, preprocessing)
    return _backends.get_runner(backend, source, layer, image_size, preprocessing)


def start_runner(asked, chosen, source, layer, image_size, preprocessing, quantized_ir=None):
    """``(backend, runner)``: the runner of the ``chosen`` backend, or TensorFlow's
    when ``asked`` was ``"auto"`` and the export failed (with a warning saying why).
    """
    try:
        return chosen, make_runner(
            chosen, source, layer, image_size, preprocessing, quantized_ir
        )
    except Exception as exc:
        if asked != "auto" or chosen == "tensorflow" or quantized_ir is not None:
            raise
        warnings.warn(
            f"backend='auto' chose {chosen!r} for "
            f"{source.plugin.display_name(source)}, but its export failed "
            f"({type(exc).__name__}: {exc}); running TensorFlow instead. Set "
            "backend='tensorflow' to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "tensorflow", make_runner(
            "tensorflow", source, layer, image_size, preprocessing
        )
