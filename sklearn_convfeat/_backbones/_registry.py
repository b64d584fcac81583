"""The registered backbone sources, in the order they are asked about a value."""

from ._applications import ApplicationsSource
from ._keras_hub import HubSource
from ._own_model import OwnModelSource

# First match wins: a source claiming some strings or models goes before
# ApplicationsSource (every string) or OwnModelSource (every other value).
_SOURCES = [
    HubSource(),  # preset names, handles and folders, before every other string
    ApplicationsSource(),
    OwnModelSource(),
]


def backbone_sources():
    """The registered :class:`~._source.BackboneSource` instances, in order."""
    return tuple(_SOURCES)


def register_source(source, position=0):
    """Register ``source`` (asked first by default, before the built-in sources).

    Parameters
    ----------
    source : BackboneSource
        An instance; its ``name`` must not be registered already.
    position : int, default=0
        Where it goes in the order sources are asked.

    Returns
    -------
    source : BackboneSource
        ``source`` itself.
    """
    if any(known.name == source.name for known in _SOURCES):
        raise ValueError(
            f"A backbone source named {source.name!r} is already registered."
        )
    _SOURCES.insert(position, source)
    return source


def unregister_source(name):
    """Remove the source named ``name`` (its records can no longer be built)."""
    _SOURCES.remove(source_named(name))


def source_named(name):
    """The registered source whose ``name`` is ``name`` (what a record stores)."""
    for source in _SOURCES:
        if source.name == name:
            return source
    raise LookupError(
        f"This base comes from the backbone source {name!r}, which is not registered "
        f"in this process (registered: {', '.join(s.name for s in _SOURCES)}). Import "
        "the module that registers it before loading or running the estimator."
    )


def find_source(backbone):
    """The first registered source that recognises the ``backbone`` value."""
    for source in _SOURCES:
        if source.recognises(backbone):
            return source
    raise ValueError(
        "`backbone` must be a keras.Model, the name of a keras.applications convnet or "
        "a keras-hub preset (name, handle or folder). "
        f"Got a {type(backbone).__name__} instead."
    )


def resolve_backbone(backbone, image_size=None):
    """The network a ``backbone`` value means, and the image size to use.

    Parameters
    ----------
    backbone : str or keras.Model
        The estimators' parameter.
    image_size : (int, int) or None
        The size asked for; None for the network's native size.

    Returns
    -------
    network : Network
        Its ``input_size`` is set when the network must be built for one size.
    image_size : (int, int) or None
        ``image_size``, else the native size (None when the network has none).
    """
    source = find_source(backbone)
    network = source.resolve(backbone)
    if image_size is None:
        image_size = source.native_size(network)
    fixed = source.fixed_input_size(network, image_size)
    return network._replace(input_size=fixed), image_size
