"""Backbones compared: images/s, FLOPs, parameters and memory of ConvFeatureExtractor
for a dozen keras.applications convnets and five keras-hub vision transformers, on each
backend.

Question
    What does each backbone cost on this CPU when used as a frozen feature extractor,
    end to end from JPEG paths (decode, resize, forward) and from decoded arrays
    (forward only), on each backend (TensorFlow, ONNX Runtime, OpenVINO, OpenVINO
    INT8)? How do images/s follow the FLOPs per image, and what memory does each take?
    Issue 13's targets, printed as met / not met: on TensorFlow at 224 px from paths,
    MobileNetV3Large >= 10x VGG16's images/s, EfficientNetB0 >= 10x, ConvNeXtTiny
    >= 1x. Issue 23: what does a keras-hub vision transformer (DINOv2-S/14 and
    B/14, SigLIP2-B/16, CLIP ViT-B/16, ViT-B/16) cost beside them, as a ratio to
    VGG16 measured in the same run (the ``vs_vgg16`` column)?

Setup
    ``--backbones`` (VGG16, ResNet50, ResNet50V2, MobileNetV2, MobileNetV3Large,
    EfficientNetB0, EfficientNetV2B0, ConvNeXtTiny, DenseNet121, Xception,
    InceptionV3, NASNetMobile), each
    ``ConvFeatureExtractor(backbone=B, weights=None, random_state=0, image_size=S,
    layer=5, pooling="avg", batch_size=32, backend=...)``: the whole base (stage 5 is
    its end), global average pooled, seeded random weights. Speed does not depend on
    the weight values, so every row says ``"weights": "random (seeded); ..."``; no
    download is needed. S in ``--sizes`` (224 and ``native``: each network's own
    size, 299 for Xception and InceptionV3; a native size of 224 is measured once).
    Backends (``--backends``, default every one whose packages are installed):
    tensorflow, onnxruntime, openvino, openvino-int8 (``quantize="int8"``,
    calibrated in ``fit`` on the timed images themselves: the INT8 graph, and so its
    speed, does not depend on what it was calibrated on); on request also
    ``auto`` (the default ``backend="auto"``; ``backend_`` says what it ran) and
    ``tensorflow-unfolded`` (TensorFlow without batch norms folded into the
    convolutions before them, to measure what folding gains). Exports and
    calibration happen in ``fit`` and are never timed in images/s: every run starts
    from a fresh ``KERAS_HOME`` (``--keep-exports`` uses one's own), so round 1's
    ``fit`` of an exported backend includes the export (``fit_first_s``; later
    rounds load it from disk), and ``auto``, listed last, finds the exports the
    other backends made, as after a user's first large job.
    ``--check-agreement``: in round 1, each backend other than TensorFlow also
    computes TensorFlow's FP32 features of the same images (the same seeded
    weights) and reports the largest difference relative to the largest feature
    (``max_relative_error``) and the least per-image cosine similarity
    (``cosine_min``). With random weights this shows that two runtimes compute the
    same function, and how far INT8 rounding moves the features; it cannot show
    what INT8 costs in accuracy (``bench_quantize.py`` does, on the real VGG16), and
    where random weights make the last stages' activations vanish (EfficientNet:
    ``reference_max_abs`` near 1e-9), the cosine of noise-sized features says
    little: ``--layer`` (5) cuts every base at another stage.
    Inputs: ``--images`` (96) images of cats_and_dogs_small/train, evenly spaced,
      paths   the JPEG paths: ``transform`` decodes and resizes them in its background
              thread while the base runs: the end-to-end rate;
      arrays  the same images decoded and resized to SxS beforehand (float32,
              ``load_images``): the forward pass and its per-batch overhead only.
    Every (backbone, backend) runs in a fresh process (this script with the hidden
    ``--child``), so memory is per backbone and backend and nothing one network
    leaves behind (threads, caches, allocator state) slows the next. The process
    fits, makes one warm-up call per size and input (tracing, compiling, first
    allocations), then times one ``transform`` of every size and input. That is one
    round; ``--repeats`` (2) rounds run every (backbone, backend) process in a fixed
    interleaved order, so background load hits all alike; images/s is the images
    over the median round's seconds.
    Columns: gflops (``count_flops(5, S, backbone=B)``: 2 x multiply-adds per
    image), gflop_per_s (images/s x gflops: how well the backend feeds the CPU),
    params (the base's parameters), rss_loaded_mb (resident memory after fit and the
    warm-up from paths: runtime, base, compiled forward), transform_peak_mb (peak
    resident memory during the timed calls, /proc/self VmHWM reset just before;
    includes the decoded arrays, 96 x S x S x 3 float32 = 58 MB at 224). Memory is
    the largest over the rounds. Every backend's process also holds the TensorFlow
    runtime and the Keras base, which ``fit`` builds for every backend.
    Accuracy (``--accuracy``, off by default; in this process, after the speed
    rounds): VGG16 with the ``--weights`` file (the real ImageNet base; skipped if
    there is none), avg-pooled block5_pool features of ``--accuracy-images`` (2000)
    train images at ``--accuracy-size`` (150) px, LogisticRegression, accuracy on the
    1000 test images. ``--accuracy-only`` skips the speed rounds.
    ``--accuracy-backbones`` adds others with ``weights="imagenet"``: Keras' cache
    (``~/.keras/models``), a download, or the folder SKLEARN_CONVFEAT_WEIGHTS names;
    one whose weights cannot be had is skipped, with the reason, in the results.
    ``--quick``: VGG16 and MobileNetV3Large, 16 images, 1 round, TensorFlow only (a
    smoke run, not a measurement).
    Transformers (``--transformers``, default all five; ``none`` leaves them out):
    this machine cannot download keras-hub's presets, so each is built from its
    keras-hub class with the published architecture of the real preset (below),
    random weights, and saved as a local preset folder in a temporary directory
    (``Backbone.save_to_preset`` and the family's ``ImageConverter.save_to_preset``
    with the preset's normalisation), which is what ``backbone=`` gets. Their rows
    say ``"weights": "random ..."`` too, and ``transformers`` in the results file
    holds each one's preset, class and configuration. Every transformer is measured
    with the same ``layer=5`` (the final norm) and ``pooling="avg"`` (the mean of
    the patch tokens; ``"cls"``, ``"cls+avg"`` and ``"embedding"`` cost the same to
    a few per mille).
      DINOv2-S/14   ``dinov2_small``: DINOV2Backbone, patch 14, 12 blocks, 384
                    wide, 6 heads, MLP 1536, no registers, native 518 px (the
                    Hugging Face checkpoint keras-hub converts; ImageNet mean and
                    std). 224 px is a size of its own: keras-hub interpolates the
                    position embeddings.
      DINOv2-B/14   ``dinov2_base``: the same at 768 wide, 12 heads, MLP 3072.
      SigLIP2-B/16  ``siglip2_base_patch16_224``: SigLIPBackbone, vision tower patch
                    16, 12 blocks, 768 wide, 12 heads, MLP 3072, 224 px, its
                    attention-pooling head; pixels to [-1, 1].
      CLIP-ViT-B/16 ``clip_vit_base_patch16``: CLIPBackbone, vision tower patch 16,
                    12 blocks, 768 wide, 12 heads, MLP 3072, quick GELU, 224 px,
                    projection 512; CLIP's mean and std.
      ViT-B/16      ``vit_base_patch16_224_imagenet``: ViTBackbone, patch 16, 12
                    blocks, 768 wide, 12 heads, MLP 3072, 224 px; [-1, 1].
    CLIP and SigLIP get a one-block text tower of a small vocabulary instead of
    their real ones: the extractor's base is the vision tower alone (and the
    embedding head), so the text tower changes neither the images/s, the FLOPs nor
    the parameters measured; it only makes the preset folders smaller to write.
    Parameter counts of the built networks equal keras-hub's metadata for the
    DINOv2 and ViT presets (22582656, 87632640, 85798656); the ``params`` column is
    the extractor's base at the measured size (DINOv2 at 224 px holds 257 position
    embeddings, not 1370). ``--tiny-transformers``
    builds the same families at 2 blocks, 32 wide (a smoke run for the tests, not a
    measurement). GFLOPs of a transformer count its dense layers and the two
    attention products of every block (query . keys, scores . values), which are
    about 10 % of DINOv2-S/14's 12.2 GFLOPs at 224 px.

Published reference
    Issue 13, measured on this CPU (2 cores, AVX2) with plain Keras
    ``model.predict_on_batch`` on batches of 32 decoded arrays at 224 px, random
    weights: VGG16 7.3 images/s, MobileNetV3Large 134, EfficientNetB0 66,
    EfficientNetV2B0 78, ResNet50 19, ConvNeXtTiny 3.4. The table's ``reference``
    column puts them beside the TensorFlow rows from arrays at 224 px.
    Transformers: no CPU speed of theirs was measured here before. Published
    shapes: ViT-Base is 12 layers, 768 wide, MLP 3072, 12 heads, 86 M parameters
    (Dosovitskiy et al., ICLR 2021, Table 1); the random-weight networks built here
    have 85.8 M without a classifier (the preset's metadata: 85798656).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import bench_memory  # noqa: E402
import bench_throughput  # noqa: E402

import sklearn_convfeat  # noqa: E402
from sklearn_convfeat import (  # noqa: E402
    BACKBONES,
    ConvFeatureExtractor,
    count_flops,
    load_images,
)

DEFAULT_BACKBONES = [
    "VGG16", "ResNet50", "ResNet50V2", "MobileNetV2", "MobileNetV3Large",
    "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "DenseNet121", "Xception",
    "InceptionV3", "NASNetMobile",
]
QUICK = {"backbones": ["VGG16", "MobileNetV3Large"], "images": 16, "repeats": 1,
         "backends": ["tensorflow"], "transformers": []}
# name -> (parameters, modules needed); "auto" is the default, ``backend_`` what ran.
# "tensorflow-unfolded": TensorFlow without folding batch norms into convolutions.
BACKENDS = {**bench_throughput.EXTRACTOR_BACKENDS, "auto": ({"backend": "auto"}, ()),
            "tensorflow-unfolded": ({"backend": "tensorflow"}, ())}
INPUTS = ("paths", "arrays")
LAYER, POOLING = 5, "avg"
WEIGHTS_NOTE = "random (seeded); speed does not depend on weight values"
# Issue 13: backbone -> least images/s as a multiple of VGG16's (TensorFlow, 224 px,
# from paths).
TARGETS = {"MobileNetV3Large": 10.0, "EfficientNetB0": 10.0, "ConvNeXtTiny": 1.0}
TARGET_SETTING = {"backend": "tensorflow", "image_size": 224, "input": "paths"}
# Issue 13: plain Keras predict_on_batch, batch 32, arrays, 224 px, random weights.
REFERENCE = {"VGG16": 7.3, "MobileNetV3Large": 134, "EfficientNetB0": 66,
             "EfficientNetV2B0": 78, "ResNet50": 19, "ConvNeXtTiny": 3.4}
REFERENCE_SETTING = {"backend": "tensorflow", "image_size": 224, "input": "arrays"}
COLUMNS = ["backbone", "backend", "backend_", "image_size", "input", "images_per_second",
           "vs_vgg16", "vs_tensorflow", "fit_first_s", "cosine_min", "max_relative_error", "reference", "gflops", "gflop_per_s", "params_m",
           "rss_loaded_mb", "transform_peak_mb"]
CHILD_TIMEOUT_S = 3600

# keras-hub vision transformers: the real presets' published architectures, built
# with random weights (no download here). label -> preset, family, shape.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # pixels to [-1, 1]
_BASE = {"depth": 12, "width": 768, "heads": 12, "mlp": 3072}
TRANSFORMERS = {
    "DINOv2-S/14": {"preset": "dinov2_small", "family": "dinov2", "patch": 14,
                    "depth": 12, "width": 384, "heads": 6, "mlp": 1536,
                    "native": 518, "normalisation": _IMAGENET},
    "DINOv2-B/14": {"preset": "dinov2_base", "family": "dinov2", "patch": 14, **_BASE,
                    "native": 518, "normalisation": _IMAGENET},
    "SigLIP2-B/16": {"preset": "siglip2_base_patch16_224", "family": "siglip",
                     "patch": 16, **_BASE, "native": 224, "normalisation": _HALF},
    "CLIP-ViT-B/16": {"preset": "clip_vit_base_patch16", "family": "clip", "patch": 16,
                      **_BASE, "native": 224, "projection": 512,
                      "normalisation": _CLIP},
    "ViT-B/16": {"preset": "vit_base_patch16_224_imagenet", "family": "vit",
                 "patch": 16, **_BASE, "native": 224, "normalisation": _HALF},
}
TINY_SHAPE = {"depth": 2, "width": 32, "heads": 2, "mlp": 64, "projection": 16}
TRANSFORMER_WEIGHTS_NOTE = (
    "random (keras-hub's initialisers): a preset folder of the real preset's "
    "architecture, not its pretrained weights; speed does not depend on weight values"
)


def parse_sizes(tokens):
    """``["224,native"]`` or ``["224", "native"]`` -> ``[224, None]`` (None: native)."""
    sizes = []
    for token in tokens:
        for part in filter(None, token.split(",")):
            if part.strip().lower() == "native":
                sizes.append(None)
            elif part.strip().isdigit():
                sizes.append(int(part))
            else:
                raise argparse.ArgumentTypeError(
                    f"`--sizes` takes pixel counts and 'native', comma- or "
                    f"space-separated. Got {part!r} instead."
                )
    return list(dict.fromkeys(sizes))


def resolve_backbones(names):
    """keras.applications spellings of ``names`` (matched as ``backbone`` matches)."""
    by_key = {"".join(c for c in name.lower() if c.isalnum()): name for name in BACKBONES}
    resolved = []
    for name in names:
        key = "".join(c for c in name.lower() if c.isalnum())
        if key not in by_key:
            raise SystemExit(
                f"--backbones: {name!r} is not a keras.applications convnet; one of "
                f"{', '.join(BACKBONES)}."
            )
        resolved.append(by_key[key])
    return resolved


def resolve_transformers(names):
    """``TRANSFORMERS`` labels of ``names`` (any case; ``all``, ``none``)."""
    by_key = {"".join(c for c in label.lower() if c.isalnum()): label
              for label in TRANSFORMERS}
    resolved = []
    for name in names:
        key = "".join(c for c in name.lower() if c.isalnum())
        if key == "all":
            resolved += list(TRANSFORMERS)
        elif key != "none":
            if key not in by_key:
                raise SystemExit(f"--transformers: {name!r} is not one of "
                                 f"{', '.join(TRANSFORMERS)} (or all, none).")
            resolved.append(by_key[key])
    return list(dict.fromkeys(resolved))


def _slug(label):
    return "".join(c if c.isalnum() else "_" for c in label.lower())


def transformer_spec(label, tiny=False):
    """The shape ``label`` is built with: the real preset's, or the tiny one."""
    return {**TRANSFORMERS[label], **(TINY_SHAPE if tiny else {})}


def save_transformer_preset(label, folder, tiny=False):
    """Build ``label``'s keras-hub backbone (random weights) and save it and its
    ImageConverter as a local preset folder; its description for the results."""
    import keras_hub
    import numpy as np

    spec = transformer_spec(label, tiny)
    family, patch, size = spec["family"], spec["patch"], spec["native"]
    shape = dict(hidden_dim=spec["width"], num_layers=spec["depth"],
                 num_heads=spec["heads"], intermediate_dim=spec["mlp"])
    mean, std = (np.asarray(part) for part in spec["normalisation"])
    # The converter's x * scale + offset = (x / 255 - mean) / std, per channel.
    normalisation = dict(scale=(1 / (255 * std)).tolist(), offset=(-mean / std).tolist())
    # One text block of a small vocabulary: the extractor never runs the text tower.
    text = dict(vocabulary_size=1000, num_layers=1, num_heads=2)
    if family == "dinov2":
        backbone = keras_hub.models.DINOV2Backbone(
            patch_size=patch, **shape, image_shape=(size, size, 3),
            position_embedding_shape=(size, size),
        )
        converter = keras_hub.layers.DINOV2ImageConverter(
            image_size=(size, size), interpolation="bicubic", **normalisation)
    elif family == "siglip":
        from keras_hub.src.models.siglip.siglip_text_encoder import SigLIPTextEncoder
        from keras_hub.src.models.siglip.siglip_vision_encoder import (
            SigLIPVisionEncoder,
        )

        backbone = keras_hub.models.SigLIPBackbone(
            vision_encoder=SigLIPVisionEncoder(patch_size=patch, **shape,
                                               image_shape=(size, size, 3)),
            # SigLIP compares the two towers' embeddings: the text one as wide.
            text_encoder=SigLIPTextEncoder(
                **text, embedding_dim=spec["width"], hidden_dim=spec["width"],
                intermediate_dim=spec["mlp"], max_sequence_length=64),
        )
        converter = keras_hub.layers.SigLIPImageConverter(
            image_size=(size, size), **normalisation)
    elif family == "clip":
        from keras_hub.src.models.clip.clip_text_encoder import CLIPTextEncoder
        from keras_hub.src.models.clip.clip_vision_encoder import CLIPVisionEncoder

        backbone = keras_hub.models.CLIPBackbone(
            vision_encoder=CLIPVisionEncoder(patch_size=patch, **shape,
                                             image_shape=(size, size, 3)),
            text_encoder=CLIPTextEncoder(**text, embedding_dim=64, hidden_dim=64,
                                         intermediate_dim=256, max_sequence_length=77),
            projection_dim=spec["projection"],
        )
        converter = keras_hub.layers.CLIPImageConverter(
            image_size=(size, size), **normalisation)
    else:
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(size, size, 3), patch_size=patch, num_layers=spec["depth"],
            num_heads=spec["heads"], hidden_dim=spec["width"], mlp_dim=spec["mlp"],
        )
        converter = keras_hub.layers.ViTImageConverter(
            image_size=(size, size), **normalisation)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return {"preset": spec["preset"], "class": type(backbone).__name__,
            "patch_size": patch, "blocks": spec["depth"], "width": spec["width"],
            "heads": spec["heads"], "mlp": spec["mlp"], "native_size": size,
            "projection": spec.get("projection") if family == "clip" else None,
            "text_tower": ("one block, vocabulary 1000 (not the preset's; the "
                           "extractor never runs it)") if family in ("clip", "siglip")
            else None,
            "tiny": tiny, "weights": TRANSFORMER_WEIGHTS_NOTE}


def save_transformer_presets(labels, root, tiny=False):
    """``{label: description}`` of the preset folders saved under ``root``."""
    saved = {}
    for label in labels:
        saved[label] = save_transformer_preset(label, Path(root) / _slug(label), tiny)
        print(f"preset folder of {label} (random weights): {Path(root) / _slug(label)}",
              flush=True)
    return saved


def backbone_argument(name, preset_root):
    """What ``backbone=`` gets: a keras.applications name, or a preset folder."""
    return str(Path(preset_root) / _slug(name)) if name in TRANSFORMERS else name


# --- the child process: one backbone on one backend ----------------------------------


def make_extractor(backbone, backend, size, batch_size, layer=LAYER):
    parameters, _ = BACKENDS[backend]
    return ConvFeatureExtractor(
        backbone=backbone, weights=None, random_state=0, image_size=size,
        layer=layer, pooling=POOLING, batch_size=batch_size, **parameters,
    )


def distinct_sizes(backbone, sizes, paths):
    """``{key: size}`` of the requested sizes that differ once ``None`` is read as the
    native size (224 and a native 224 are measured once, as 224), and ``{key: True if
    it is the native size, None if not known}``. A TensorFlow fit tells the native
    size: it exports and calibrates nothing."""
    chosen, native, pixels_of = {}, {}, {}
    for size in sizes:
        key = "native" if size is None else size
        pixels = size if size is not None else make_extractor(
            backbone, "tensorflow", None, 1).fit(paths[:1]).image_size_[0]
        first = next((other for other, seen in pixels_of.items() if seen == pixels),
                     None)
        if first is not None:
            native[first] = native[first] or size is None
            continue
        chosen[key], native[key], pixels_of[key] = size, True if size is None else None, pixels
    return chosen, native


def measure_child(args):
    """In a fresh process: one round of every size and input of one backbone and
    backend, with its memory (and, with ``--facts``, its FLOPs and parameters)."""
    paths, _ = _common.load_split(args.data, "train", args.images)
    if args.child_backend == "tensorflow-unfolded":
        from sklearn_convfeat import _fast_ops

        _fast_ops.FOLD_BATCH_NORMS = False
    extractors, errors = {}, {}
    backbone = backbone_argument(args.child, args.preset_root)
    sizes, native = distinct_sizes(backbone, args.sizes, paths)
    fit_seconds = {}
    for key, size in sizes.items():
        try:
            extractors[key], fit_seconds[key] = _common.timed(make_extractor(
                backbone, args.child_backend, size, args.batch_size, args.layer).fit,
                paths)
        except Exception as exc:  # noqa: BLE001  reported as this size's error
            errors[key] = f"{type(exc).__name__}: {exc}"[:2000]
    for extractor in extractors.values():  # tracing, compiling, decoder thread
        extractor.transform(paths[: args.batch_size])
    rss_loaded = bench_memory.status_mb("VmRSS") or bench_memory.ru_maxrss_mb()
    arrays = {key: load_images(paths, image_size=extractor.image_size_)
              for key, extractor in extractors.items()} if "arrays" in args.inputs else {}
    for key, images in arrays.items():
        extractors[key].transform(images[: args.batch_size])
    peak_reset = bench_memory.reset_peak_rss()
    methods = []
    for key, extractor in extractors.items():
        for kind in args.inputs:
            images = paths if kind == "paths" else arrays[key]
            _, seconds = _common.timed(extractor.transform, images)
            methods.append({"size": key, "image_size": extractor.image_size_[0],
                            "input": kind, "seconds": seconds})
    peak = bench_memory.status_mb("VmHWM") if peak_reset else bench_memory.ru_maxrss_mb()
    facts, runs = {}, {}
    for key, extractor in extractors.items():
        runs[key] = {"fit_seconds": fit_seconds[key], "backend_": extractor.backend_}
        if args.agreement and extractor.backend_ != "tensorflow":
            try:
                runs[key].update(agreement(extractor, backbone, paths))
            except Exception as exc:  # noqa: BLE001  the timings still count
                errors[f"agreement {key}"] = f"{type(exc).__name__}: {exc}"[:2000]
        facts[key] = {"image_size": extractor.image_size_[0], "native": native[key],
                      "preprocessing": extractor.preprocessing_,
                      "layer": extractor.layer_, "n_features": extractor.n_features_out_}
        if args.facts:
            try:
                facts[key]["gflops"] = count_flops(
                    args.layer, extractor.image_size_, backbone=backbone) / 1e9
            except Exception as exc:  # noqa: BLE001  the timings still count
                errors[f"count_flops {key}"] = f"{type(exc).__name__}: {exc}"[:2000]
    if args.facts and extractors:
        # The base that ran, not a copy: the extractor's own (shared) Keras model.
        from sklearn_convfeat._extractor import tensorflow_runner

        facts["params"] = tensorflow_runner(
            next(iter(extractors.values()))).model.count_params()
    return {"images": len(paths), "methods": methods, "errors": errors, "facts": facts,
            "runs": runs, "rss_loaded_mb": rss_loaded, "transform_peak_mb": peak}


def agreement(extractor, backbone, paths):
    """How ``extractor``'s features (another backend than TensorFlow) compare with
    TensorFlow's FP32 ones for the same weights and images: the largest difference
    relative to the largest feature, and each image's cosine similarity."""
    import numpy as np

    reference = make_extractor(backbone, "tensorflow", extractor.image_size_[0],
                               extractor.batch_size, extractor.layer).fit(paths)
    reference = reference.transform(paths)
    features = extractor.transform(paths)
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(features * reference, axis=1) / np.maximum(norms, 1e-30)
    return {"max_relative_error": float(np.abs(features - reference).max()
                                        / np.abs(reference).max()),
            "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "reference_max_abs": float(np.abs(reference).max())}


def child_environment(export_home=None):
    """This environment, importing the same sklearn_convfeat as this process, with
    ``export_home`` as KERAS_HOME (the exports' folder) when given."""
    package_root = str(Path(sklearn_convfeat.__file__).resolve().parents[1])
    return {**os.environ, **({"KERAS_HOME": export_home} if export_home else {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                        os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def run_child(args, backbone, backend, facts):
    """``measure_child`` for (backbone, backend) in a fresh process; failures come
    back as ``{"failed": message}``."""
    sizes = ",".join("native" if size is None else str(size) for size in args.sizes)
    command = [
        sys.executable, __file__, "--child", backbone, "--child-backend", backend,
        "--data", str(args.data), "--images", str(args.images), "--sizes", sizes,
        "--batch-size", str(args.batch_size), "--layer", str(args.layer),
        "--inputs", *args.inputs,
    ] + (["--facts"] if facts else []) + (["--agreement"] if args.agreement else []) + (
        ["--preset-root", str(args.preset_root)] if backbone in TRANSFORMERS else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              env=child_environment(args.export_home), timeout=args.child_timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.child_timeout} s"}
    if done.returncode:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"failed": f"exit {done.returncode}: " + " | ".join(tail[-3:])[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent: rounds, rows, targets ----------------------------------------------


def measure(args):
    """Every (backbone, backend) child, ``--repeats`` interleaved rounds; the per-run
    results grouped by (backbone, backend)."""
    runs = {(backbone, backend): [] for backbone in [*args.backbones, *args.transformers]
            for backend in args.backends}
    for round_index in range(args.repeats):
        for (backbone, backend), done in runs.items():
            # FLOPs and parameters once per backbone, after its first timed round.
            facts = round_index == 0 and backend == args.backends[0]
            args.agreement = args.check_agreement and round_index == 0
            result = run_child(args, backbone, backend, facts)
            status = result.get("failed") or ", ".join(
                f"{m['image_size']}px {m['input']} {m['seconds']:.1f}s"
                for m in result["methods"]) + "".join(
                f" (fit {run['fit_seconds']:.1f}s, ran {run['backend_']})"
                for run in result["runs"].values())
            print(f"round {round_index + 1}/{args.repeats} {backbone:17s} "
                  f"{backend:13s} {status}", flush=True)
            done.append(result)
    return runs


def summarize(runs):
    """One row per (backbone, backend, size, input), and each backbone's failures."""
    facts, rows, failures = {}, [], []
    for (backbone, _), results in runs.items():
        for result in results:
            facts.setdefault(backbone, {})
            for key, value in result.get("facts", {}).items():
                if isinstance(value, dict):
                    facts[backbone].setdefault(key, {}).update(value)
                else:
                    facts[backbone][key] = value
    for (backbone, backend), results in runs.items():
        completed = [result for result in results if "failed" not in result]
        failures += [{"backbone": backbone, "backend": backend, "error": result["failed"]}
                     for result in results if "failed" in result]
        for result in completed[:1]:
            failures += [{"backbone": backbone, "backend": backend, "size": size,
                          "error": error} for size, error in result["errors"].items()]
        seconds = {}
        for result in completed:
            for method in result["methods"]:
                seconds.setdefault((method["size"], method["input"]), []).append(
                    method["seconds"])
        for (size, kind), times in seconds.items():
            size_facts = facts[backbone].get(str(size), {})
            rows.append(make_row(backbone, backend, size, kind, times, completed,
                                 size_facts, facts[backbone].get("params")))
    add_vgg16_ratios(rows)
    add_tensorflow_ratios(rows)
    return rows, failures, facts


def add_vgg16_ratios(rows):
    """``vs_vgg16``: each row's images/s over VGG16's in the same run, backend,
    image size and input (None without such a VGG16 row)."""
    vgg16 = {(row["backend"], row["image_size"], row["input"]): row["images_per_second"]
             for row in rows if row["backbone"] == "VGG16"}
    for row in rows:
        reference = vgg16.get((row["backend"], row["image_size"], row["input"]))
        row["vs_vgg16"] = row["images_per_second"] / reference if reference else None


def add_tensorflow_ratios(rows):
    """``vs_tensorflow``: each row's images/s over TensorFlow's for the same backbone,
    image size and input in the same run (None without such a row)."""
    tensorflow = {(row["backbone"], row["image_size"], row["input"]):
                  row["images_per_second"] for row in rows
                  if row["backend"] == "tensorflow"}
    for row in rows:
        reference = tensorflow.get((row["backbone"], row["image_size"], row["input"]))
        row["vs_tensorflow"] = row["images_per_second"] / reference if reference else None


def make_row(backbone, backend, size, kind, times, completed, size_facts, params):
    images = completed[0]["images"]
    rate = images / statistics.median(times)
    runs = [result["runs"][str(size)] for result in completed
            if str(size) in result.get("runs", {})]
    checked = next((run for run in runs if "cosine_min" in run), {})
    row = {
        "backbone": backbone,
        "backend": backend,
        "size": size,  # what --sizes asked for: pixels or "native"
        "image_size": size_facts.get("image_size", size),
        "native": size_facts.get("native"),  # None: native size not measured
        "input": kind,
        "images": images,
        "seconds": times,
        "images_per_second": rate,
        "gflops": size_facts.get("gflops"),
        "gflop_per_s": rate * size_facts["gflops"] if "gflops" in size_facts else None,
        "params": params,
        "params_m": params / 1e6 if params else None,
        "preprocessing": size_facts.get("preprocessing"),
        "layer": size_facts.get("layer"),
        "n_features": size_facts.get("n_features"),
        # Round 1's fit exports (or calibrates) into a fresh KERAS_HOME; later
        # rounds' fits load the export.
        "fit_seconds": [run["fit_seconds"] for run in runs],
        "fit_first_s": runs[0]["fit_seconds"] if runs else None,
        "backend_": "+".join(sorted({run["backend_"] for run in runs})),
        **{key: checked.get(key) for key in ("max_relative_error", "cosine_min",
                                             "cosine_mean", "reference_max_abs")},
        "rss_loaded_mb": max(result["rss_loaded_mb"] for result in completed),
        "transform_peak_mb": max(result["transform_peak_mb"] for result in completed),
        "source": "keras-hub" if backbone in TRANSFORMERS else "keras.applications",
        "preset": TRANSFORMERS[backbone]["preset"] if backbone in TRANSFORMERS else None,
        "weights": TRANSFORMER_WEIGHTS_NOTE if backbone in TRANSFORMERS else WEIGHTS_NOTE,
    }
    if all(row[key] == value for key, value in REFERENCE_SETTING.items()):
        row["reference"] = REFERENCE.get(backbone)
    return row


# backend="auto" lists a family when an export beats TensorFlow by this much, from
# paths and from arrays alike; break-even images carry this margin for slower CPUs.
AUTO_MIN_SPEEDUP, AUTO_MARGIN = 1.10, 2.0


def derive_auto_rules(rows, size=224):
    """``{family: {"backends": [...], "break_even_images": n, ...}}``: what
    ``backend="auto"`` should run for each keras.applications family measured here.

    An exported backend qualifies when its images/s are at least
    ``AUTO_MIN_SPEEDUP`` x TensorFlow's at ``size`` from paths and from arrays (those
    measured); the fastest from paths comes first. The break-even is the images whose
    saved seconds pay for the export (round 1's fit time over TensorFlow's, from a
    fresh KERAS_HOME), times ``AUTO_MARGIN``.
    """
    from sklearn_convfeat._backbones import family, resolve_architecture

    def rate(backbone, backend, kind):
        return next((row for row in rows if row["backbone"] == backbone
                     and row["backend"] == backend and row["image_size"] == size
                     and row["input"] == kind), None)

    rules = {}
    for backbone in dict.fromkeys(row["backbone"] for row in rows):
        if backbone in TRANSFORMERS or rate(backbone, "tensorflow", "paths") is None:
            continue
        tensorflow = rate(backbone, "tensorflow", "paths")
        winners = []
        for backend in ("onnxruntime", "openvino"):
            speedups = [
                rate(backbone, backend, kind)["images_per_second"]
                / rate(backbone, "tensorflow", kind)["images_per_second"]
                for kind in INPUTS
                if rate(backbone, backend, kind) and rate(backbone, "tensorflow", kind)
            ]
            if speedups and min(speedups) >= AUTO_MIN_SPEEDUP:
                winners.append((rate(backbone, backend, "paths") or {}, backend, speedups))
        if not winners:
            continue
        winners.sort(key=lambda item: -item[0].get("images_per_second", 0))
        best, _, speedups = winners[0]
        export_seconds = max(best["fit_first_s"] - tensorflow["fit_first_s"], 0.0)
        saved = 1 / tensorflow["images_per_second"] - 1 / best["images_per_second"]
        rules[family(resolve_architecture(backbone))] = {
            "measured_on": backbone,
            "backends": [backend for _, backend, _ in winners],
            "speedup_paths_arrays": speedups,
            "export_seconds": export_seconds,
            "break_even_images": round(AUTO_MARGIN * export_seconds / saved),
        }
    return rules


def lookup(rows, backbone, setting):
    for row in rows:
        if row["backbone"] == backbone and all(row[k] == v for k, v in setting.items()):
            return row["images_per_second"]
    return None


def check_targets(rows):
    """Issue 13's ratios to VGG16 (TensorFlow, 224 px, from paths), met or not."""
    vgg16 = lookup(rows, "VGG16", TARGET_SETTING)
    targets = []
    for backbone, target in TARGETS.items():
        rate = lookup(rows, backbone, TARGET_SETTING)
        ratio = rate / vgg16 if rate and vgg16 else None
        targets.append({"backbone": backbone, "versus": "VGG16", **TARGET_SETTING,
                        "images_per_second": rate, "vgg16_images_per_second": vgg16,
                        "ratio": ratio, "target": target,
                        "met": None if ratio is None else ratio >= target})
    return targets


def print_targets(targets):
    print("\nissue 13 targets (tensorflow, 224 px, from JPEG paths, images/s vs VGG16):")
    for target in targets:
        if target["ratio"] is None:
            print(f"  {target['backbone']:17s} n/a (needs VGG16 and it measured at "
                  "224 px on tensorflow from paths)")
            continue
        print(f"  {target['backbone']:17s} {target['ratio']:6.3g}x VGG16 "
              f"({target['images_per_second']:.3g} vs "
              f"{target['vgg16_images_per_second']:.3g} images/s; target >= "
              f"{target['target']:g}x: {'met' if target['met'] else 'not met'})")


# --- optional accuracy (VGG16 with real weights; others with their ImageNet weights) --


def accuracy_weights(backbone, args):
    """The weights file for VGG16 (``--weights``), ``"imagenet"`` for the others
    (Keras' cache or download, or SKLEARN_CONVFEAT_WEIGHTS); None when VGG16 has no
    file."""
    if backbone != "VGG16":
        return "imagenet"
    weights = _common.weights_argument(args.weights)
    return weights if weights is not None and Path(weights).is_file() else None


def measure_accuracy(args):
    """Test accuracy of LogisticRegression on each ``--accuracy-backbones`` network's
    avg-pooled stage-5 features; a backbone without weights is skipped, with why."""
    from sklearn.linear_model import LogisticRegression

    train, y_train = _common.load_split(args.data, "train", args.accuracy_images)
    test, y_test = _common.load_split(args.data, "test", args.accuracy_test_images)
    rows, skipped = [], []
    for backbone in args.accuracy_backbones:
        weights = accuracy_weights(backbone, args)
        if weights is None:
            skipped.append({"backbone": backbone,
                            "reason": f"no weights file: {args.weights}"})
            continue
        extractor = ConvFeatureExtractor(
            backbone=backbone, weights=weights, layer=LAYER, pooling=POOLING,
            image_size=args.accuracy_size,
        )
        try:
            features, extract_seconds = _common.timed(extractor.fit_transform, train)
        except Exception as exc:  # noqa: BLE001  e.g. no internet for "imagenet"
            skipped.append({"backbone": backbone,
                            "reason": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        test_features, test_seconds = _common.timed(extractor.transform, test)
        classifier = LogisticRegression(max_iter=5000).fit(features, y_train)
        rows.append({
            "backbone": backbone, "weights": weights,
            "weights_sha256": extractor.weights_sha256_,
            "image_size": extractor.image_size_[0], "layer": extractor.layer_,
            "pooling": POOLING, "preprocessing": extractor.preprocessing_,
            "train_images": len(train), "test_images": len(test),
            "test_accuracy": float(classifier.score(test_features, y_test)),
            "extract_seconds": extract_seconds + test_seconds,
        })
    print(f"\naccuracy: avg-pooled stage-5 features + LogisticRegression, "
          f"{len(train)} train / {len(test)} test images")
    if rows:
        _common.print_table(rows, ["backbone", "image_size", "layer", "preprocessing",
                                   "test_accuracy", "extract_seconds"])
    for skip in skipped:
        print(f"  {skip['backbone']} skipped: {skip['reason']}")
    return {"rows": rows, "skipped": skipped}


# --- command line ---------------------------------------------------------------------


def main(argv=None):
    arguments = _common.parser(__doc__)
    arguments.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES,
                           help="keras.applications names, any case (default: 12)")
    arguments.add_argument("--sizes", nargs="+", default=["224,native"],
                           help="image sizes: pixels and/or 'native' (default "
                           "224,native)")
    arguments.add_argument("--backends", nargs="+", choices=list(BACKENDS),
                           help="default: every backend whose packages are installed")
    arguments.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    arguments.add_argument("--images", type=int, default=96,
                           help="train images per measurement (default 96)")
    arguments.add_argument("--repeats", type=int, default=2)
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--layer", type=int, default=LAYER, choices=range(1, 6),
                           help="stage the bases are cut at (default 5: the whole base)")
    arguments.add_argument("--quick", action="store_true",
                           help="smoke run: VGG16 and MobileNetV3Large, 16 images, "
                           "1 round, tensorflow")
    arguments.add_argument("--accuracy", action="store_true",
                           help="also VGG16's test accuracy with the --weights file")
    arguments.add_argument("--accuracy-only", action="store_true",
                           help="--accuracy without the speed rounds")
    arguments.add_argument("--accuracy-backbones", nargs="+", default=["VGG16"],
                           help="networks whose accuracy --accuracy measures "
                           "(default VGG16; others need their ImageNet weights)")
    arguments.add_argument("--accuracy-images", type=int, default=2000,
                           help="train images the classifier learns from")
    arguments.add_argument("--accuracy-test-images", type=int,
                           help="test images scored (default: all)")
    arguments.add_argument("--accuracy-size", default="150",
                           help="image size of the accuracy runs: pixels or 'native'")
    arguments.add_argument("--transformers", nargs="*", default=["all"],
                           help="keras-hub transformer shapes, random weights: "
                           f"{', '.join(TRANSFORMERS)}, 'all' (default) or 'none'")
    arguments.add_argument("--tiny-transformers", action="store_true",
                           help="the transformer families at 2 blocks, 32 wide: a "
                           "smoke run, not a measurement")
    arguments.add_argument("--preset-root",
                           help="folder for the transformers' preset folders (default: "
                           "a temporary one, removed at the end)")
    arguments.add_argument("--child-timeout", type=int, default=CHILD_TIMEOUT_S)
    arguments.add_argument("--child", help=argparse.SUPPRESS)
    arguments.add_argument("--child-backend", help=argparse.SUPPRESS)
    arguments.add_argument("--facts", action="store_true", help=argparse.SUPPRESS)
    arguments.add_argument("--agreement", action="store_true", help=argparse.SUPPRESS)
    arguments.add_argument("--check-agreement", action="store_true",
                           help="compare every other backend's features with "
                           "TensorFlow's (round 1)")
    arguments.add_argument("--keep-exports", action="store_true",
                           help="use $KERAS_HOME's exports instead of a fresh folder")
    args = arguments.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
    except argparse.ArgumentTypeError as exc:
        arguments.error(str(exc))
    if args.child:
        print(json.dumps(measure_child(args)))
        return None
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    args.backbones = resolve_backbones(args.backbones)
    args.transformers = resolve_transformers(args.transformers)
    args.accuracy_backbones = resolve_backbones(args.accuracy_backbones)
    try:
        (args.accuracy_size,) = parse_sizes([args.accuracy_size])
    except (argparse.ArgumentTypeError, ValueError):
        arguments.error(f"--accuracy-size takes one size or 'native'. Got "
                        f"{args.accuracy_size!r} instead.")
    args.backends = args.backends or [
        name for name in bench_throughput.available_backends() if name in BACKENDS
    ]

    args.accuracy = args.accuracy or args.accuracy_only
    if args.accuracy_only:
        args.transformers = []
    with tempfile.TemporaryDirectory(prefix="bench_backbones_presets_") as scratch:
        if args.transformers:
            args.preset_root = args.preset_root or scratch
            transformers = save_transformer_presets(args.transformers, args.preset_root,
                                                    args.tiny_transformers)
        else:
            transformers = {}
        args.export_home = None if args.keep_exports else tempfile.mkdtemp(
            prefix="bench_backbones_exports_", dir=scratch)
        runs = {} if args.accuracy_only else measure(args)
    rows, failures, facts = summarize(runs)
    print(f"\n{rows[0]['images'] if rows else args.images} images of train/, "
          f"layer {args.layer} + {POOLING} pooling, batch {args.batch_size}, random "
          f"weights, median of {args.repeats} round(s), one process per backbone "
          "and backend; vs_vgg16: images/s over VGG16's in this run")
    _common.print_table(rows, COLUMNS)
    for failure in failures:
        print(f"FAILED {failure['backbone']} on {failure['backend']}"
              f"{' at ' + str(failure['size']) if 'size' in failure else ''}: "
              f"{failure['error']}")
    targets = check_targets(rows)
    print_targets(targets)
    auto_rules = derive_auto_rules(rows)
    print("\nbackend='auto' rules these rows give (families whose export is >= "
          f"{AUTO_MIN_SPEEDUP}x TensorFlow from paths and arrays):")
    for name, rule in auto_rules.items():
        print(f"  {name:16s} {', '.join(rule['backends']):24s} break-even "
              f"{rule['break_even_images']} images ({rule['measured_on']})")
    settings = {key: value for key, value in vars(args).items()
                if key not in ("out", "child", "child_backend", "facts", "preset_root",
                               "export_home", "agreement")}
    settings["sizes"] = ["native" if size is None else size for size in args.sizes]
    results = {"settings": settings, "weights": WEIGHTS_NOTE, "rows": rows,
               "failures": failures, "facts": facts, "targets": targets,
               "auto_rules": auto_rules,
               "transformers": transformers,
               "reference": {"source": "issue 13: Keras predict_on_batch, batch 32, "
                             "arrays, 224 px, random weights, this CPU",
                             "images_per_second": REFERENCE}}
    if args.accuracy:
        results["accuracy"] = measure_accuracy(args)
    return _common.save_results("bench_backbones", results, args.out)


if __name__ == "__main__":
    main()
