"""Transfer learning with a pretrained convnet as scikit-learn estimators."""

from importlib.metadata import PackageNotFoundError, version

from ._cam import CamDisplay, cam, cam_faithfulness, cam_metrics, overlay, plot_cam
from ._extractor import ConvFeatureExtractor
from ._finetune import FineTuner
from ._images import load_image_folder
from ._mlp import KerasMLPClassifier

try:
    __version__ = version("sklearn-convfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CamDisplay",
    "ConvFeatureExtractor",
    "FineTuner",
    "KerasMLPClassifier",
    "__version__",
    "cam",
    "cam_faithfulness",
    "cam_metrics",
    "load_image_folder",
    "overlay",
    "plot_cam",
]
