"""Class activation maps: which parts of an image made a model choose a class.

One module per job: ``_api`` (``cam``), one module per method on ``_base.CamMethod``
(``_gradcam``, ``_gradcampp``, ``_hirescam``, ``_xgradcam``, ``_layercam``,
``_eigencam``, ``_scorecam``, ``_ablationcam``; ``_registry`` names them), ``_explain``
(batches, SmoothGrad, aug_smooth), model adapters (``_adapters``: Keras models and
FineTuner; ``_pipeline``: feature pipelines), ``_keras_graph`` (running nested Keras
models layer by layer), ``_compiled`` (the tf.function cache), ``_metrics`` and
``_road`` (faithfulness), ``_display`` and ``_colormaps`` (overlays and figures).
"""

from ._api import cam, explain_images
from ._display import CamDisplay, overlay, plot_cam
from ._metrics import cam_faithfulness, cam_metrics
from ._registry import GRADIENT_METHODS, METHODS

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "CamDisplay",
    "cam",
    "cam_faithfulness",
    "cam_metrics",
    "explain_images",
    "overlay",
    "plot_cam",
]
