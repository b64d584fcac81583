"""Where a backbone comes from: one module per source, behind one interface.

A ``backbone`` value is resolved by the first registered source that recognises it
(:func:`find_source`, in the order of ``_registry._SOURCES``) into a
:class:`Network`: the source's name plus what identifies and rebuilds the network.
That goes into the estimators' ``WeightsSource``, a small picklable record, and
everything downstream (the base cache, the extractor, the feature cache's namespace,
exported ONNX / OpenVINO models, FineTuner, ``cam()``, Dask workers) asks the record's
source (``WeightsSource.plugin``) rather than testing which kind of backbone it is.

The sources today:

- ``_applications.py``: keras.applications convnets by name (``"resnet50"``); it
  claims every string, so that a misspelt name gets the closest names.
- ``_own_model.py``: a user's built ``keras.Model``, identified by a sha256 over its
  configuration and weights and carried as ``.keras`` bytes.
- ``_keras_hub.py`` (with ``_hub_layouts.py``): keras-hub's vision transformers
  (DINOv2, ViT, CLIP's and SigLIP's vision towers) by preset name, ``kaggle://`` /
  ``hf://`` handle, local preset folder or built ``keras_hub.models.Backbone``,
  laid out flat with a cut point after every block.

Adding a source takes one new
module with a :class:`BackboneSource` subclass and one line in ``_registry._SOURCES``
(placed before the built-in source that would otherwise claim its values: before
``ApplicationsSource`` for strings, before ``OwnModelSource`` for models). The
subclass sets ``name`` (stored in records; never renamed once released) and
implements ``recognises(backbone)`` (does this value belong to me?),
``resolve(backbone)`` (the :class:`Network`: ``architecture`` for a name or handle
that rebuilds it, ``model_sha256`` for a weights hash, ``model_data`` for bytes a
name cannot rebuild from; ``ValueError`` for a value it claims but cannot use),
``build(network, input_size, pretrained)`` (a fresh Functional ``keras.Model`` with
one image input, with its pretrained weights when asked; ``WeightsUnavailableError``
when they cannot be had), ``display_name(network)`` and ``key(network)`` (its name in
messages and its identity in cache namespaces). It overrides, where the defaults do
not fit: ``native_size`` (the image size its weights expect; a preset's image
size), ``fixed_input_size`` (a network that must be built for one size),
``default_preprocessing`` (what ``preprocessing="auto"`` means: a
``PREPROCESSING_MODES`` value; a source with its own normalisation, such as a
preset's ImageConverter, builds it into the base and returns ``"none"``),
``renames_layers``, ``carries_weights``, ``speed_family`` (its row in
``backend="auto"``'s measured table), ``file_label``, ``weights_file_name`` (its
pretrained weights' file name in a ``SKLEARN_CONVFEAT_WEIGHTS`` folder),
``local_paths`` (files or folders it is rebuilt from, which cluster workers must see
at the same paths: a preset folder); for a network whose cuts output tokens rather
than feature maps (a transformer), ``prefix_tokens`` (class and register tokens
before the patch tokens), ``token_count``, ``stage_ends`` (its stages, which are
not read from downsampling), ``pooling`` (the token poolings it takes) and
``frozen_layers`` (what FineTuner never trains); and the
message phrases ``pretrained_description``, ``environment_file_fix`` and
``base_description``. Nothing else changes: the weights kinds (``"imagenet"`` for
the source's own pretrained weights, a file, a seed), cut points, stages, pooling,
caches and exports work on the built base.
"""

from ._applications import (
    ARCHITECTURES,
    FAMILIES,
    ApplicationsSource,
    build_architecture,
    family,
    identify_by_parameters,
    keras_weights_file,
    native_size,
    needs_fixed_size,
    resolve_architecture,
)
from ._hub_layouts import token_layers
from ._own_model import OwnModelSource, own_model_copy, own_model_identity
from ._registry import (
    backbone_sources,
    find_source,
    register_source,
    resolve_backbone,
    source_named,
    unregister_source,
)
from ._source import BackboneSource, Network

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "ApplicationsSource",
    "BackboneSource",
    "Network",
    "OwnModelSource",
    "backbone_sources",
    "build_architecture",
    "family",
    "find_source",
    "identify_by_parameters",
    "keras_weights_file",
    "native_size",
    "needs_fixed_size",
    "own_model_copy",
    "own_model_identity",
    "register_source",
    "resolve_architecture",
    "resolve_backbone",
    "source_named",
    "token_layers",
    "unregister_source",
]
