"""Transfer learning with a pretrained convnet as scikit-learn estimators."""

from importlib.metadata import PackageNotFoundError, version

from ._cam import cam, cam_faithfulness, overlay, plot_cam
from ._extractor import ConvFeatureExtractor
from ._finetune import FineTuner
from ._images import load_image_folder
from ._mlp import KerasMLPClassifier
from ._persistence import load, save

try:
    __version__ = version("sklearn-convfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvFeatureExtractor",
    "FineTuner",
    "KerasMLPClassifier",
    "cam",
    "cam_faithfulness",
    "load",
    "load_image_folder",
    "overlay",
    "plot_cam",
    "save",
    "__version__",
]
