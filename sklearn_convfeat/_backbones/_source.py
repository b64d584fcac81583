"""What a backbone source provides: the interface every source module implements."""

import re
from abc import ABC, abstractmethod
from typing import NamedTuple


class Network(NamedTuple):
    """The network part of a weights source: which network, from which source.

    Its fields are those of :class:`~sklearn_convfeat._weights.WeightsSource` of the
    same names, so ``WeightsSource(kind, **network._asdict())`` makes the record, and
    every :class:`BackboneSource` method that takes a ``network`` accepts either.

    Attributes
    ----------
    backbone_source : str
        The :attr:`BackboneSource.name` of the source that resolved it.
    architecture : str or None
        What names the network within its source (a keras.applications constructor
        name), or None when its content identifies it.
    model_sha256 : str or None
        sha256 of the network's content (configuration and weights), when known.
    model_data : bytes or None
        What rebuilds the network in another process (a model's ``.keras`` bytes),
        when its name alone does not.
    input_size : tuple or None
        The (height, width) the network must be built for, or None for any size.
    """

    backbone_source: str
    architecture: str | None = None
    model_sha256: str | None = None
    model_data: bytes | None = None
    input_size: tuple | None = None


class BackboneSource(ABC):
    """One kind of ``backbone`` value: how it is recognised, named, sized and built.

    A source is stateless; the registry holds one instance of each. Every method
    that takes a ``network`` is given the :class:`Network` its :meth:`resolve`
    returned, or a ``WeightsSource`` made from it (same fields).
    """

    #: Stored in every record this source resolves, to find it again after
    #: unpickling: never rename a released source.
    name = None
    #: Whether automatically named layers are renumbered as in a fresh process
    #: (False keeps the names a user gave their own model's layers).
    renames_layers = True
    #: Whether the record itself carries the pretrained weights (``model_data``),
    #: so that no worker needs a weights file or a download.
    carries_weights = False

    @abstractmethod
    def recognises(self, backbone):
        """Whether ``backbone`` (the estimators' parameter) is for this source.

        Sources are asked in registry order and the first to say yes resolves the
        value, so a source may claim values it then rejects with a helpful error
        (keras.applications claims every string).
        """

    @abstractmethod
    def resolve(self, backbone):
        """The :class:`Network` ``backbone`` means; ``ValueError`` if it means none."""

    @abstractmethod
    def build(self, network, input_size, pretrained):
        """A fresh base (a Functional ``keras.Model``, one image input).

        ``input_size`` is (height, width) or None for any size; ``pretrained`` asks
        for the source's own pretrained weights (else any weights do: they are
        replaced). Raises ``WeightsUnavailableError`` when they cannot be obtained.
        """

    @abstractmethod
    def display_name(self, network):
        """The network's name in messages: ``"VGG16"``."""

    @abstractmethod
    def key(self, network):
        """A string that identifies the network: part of feature cache namespaces."""

    def native_size(self, network):
        """(height, width) the network's pretrained weights expect, or None."""
        return None

    def fixed_input_size(self, network, image_size):
        """The size the base must be built for when ``image_size`` is asked, or None
        when one base takes every size."""
        return None

    def default_preprocessing(self, network):
        """The ``preprocessing`` mode ``"auto"`` stands for (one of
        ``PREPROCESSING_MODES``; ``"none"`` when the network normalises its input)."""
        return "none"

    def stage_ends(self, network, model):
        """{stage: layer name} of the built base ``model``, or None to read the stages
        from its graph (where the maps are downsampled 2^N times)."""
        return None

    def prefix_tokens(self, network):
        """None for a network whose cuts output feature maps (a convnet); for a
        transformer, the tokens (class, registers) before its patch tokens."""
        return None

    def frozen_layers(self, network):
        """Names of base layers FineTuner never trains (the rest follows ``unfreeze``)."""
        return ()

    def token_count(self, network, image_size):
        """Tokens a transformer's blocks output for ``image_size`` images."""
        raise NotImplementedError

    def pooling(self, network, pooling, layer, entry):
        """The pooling value for the ``pooling`` parameter at ``layer`` (see
        :func:`~sklearn_convfeat._pooling.pool_array`); a convnet's is the name."""
        from .._pooling import MAP_POOLINGS

        if pooling not in MAP_POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {', '.join(map(repr, MAP_POOLINGS))} for "
                f"{self.display_name(network)}, whose cuts output feature maps. Got "
                f"pooling={pooling!r} instead: {pooling!r} pools the tokens of a vision "
                "transformer (a keras-hub backbone)."
            )
        return pooling

    def speed_family(self, network):
        """The family ``backend="auto"`` looks up in its measured table
        (``_backend_choice.AUTO_RULES``); None runs TensorFlow."""
        return None

    def file_label(self, network):
        """A short, lowercase, file-name-safe label: exported models' file names."""
        return re.sub(r"[^a-z0-9]+", "_", self.key(network).lower())[:40]

    def weights_file_name(self, network):
        """The file name of the pretrained weights in a folder that
        ``SKLEARN_CONVFEAT_WEIGHTS`` names, or None when they never come from one."""
        return None

    def local_paths(self, network):
        """Local files or folders the network is rebuilt from (besides a weights
        file), which another process, such as a cluster worker, must see at the same
        paths; () when it needs none."""
        return ()

    def pretrained_description(self, network):
        """Where ``weights="imagenet"`` reads from, in messages."""
        return f"the pretrained weights of {self.display_name(network)}"

    def environment_file_fix(self, network):
        """The fix, in messages, for a file under :meth:`weights_file_name` that
        holds other weights."""
        return (
            f"Put {self.pretrained_description(network)} there, or remove the file."
        )

    def base_description(self, network, model):
        """The built base ``model``, in messages about weights that do not fit it."""
        return f"the {self.display_name(network)} base"
