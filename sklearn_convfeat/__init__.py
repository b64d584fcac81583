"""Transfer learning with a pretrained convnet as scikit-learn estimators."""

from importlib.metadata import PackageNotFoundError, version

from ._architectures import ARCHITECTURES as _ARCHITECTURES
from ._architectures import PREPROCESSING_MODES as _PREPROCESSING_MODES
from ._backbone import count_flops
from ._cam import METHODS as _CAM_METHODS
from ._cam import CamDisplay, cam, cam_faithfulness, cam_metrics, overlay, plot_cam
from ._compare import compare_backbones
from ._extractor import ConvFeatureExtractor
from ._finetune import FineTuner
from ._finetune_regressor import FineTunerRegressor
from ._images import IMAGE_EXTENSIONS, load_image_folder, load_images
from ._mlp import KerasMLPClassifier
from ._mlp_regressor import KerasMLPRegressor
from ._persistence import load, save
from ._weights import check_weights

#: The ``method`` names :func:`cam` takes.
CAM_METHODS = tuple(_CAM_METHODS)
#: The keras.applications convnets ``backbone`` names (matched without regard to case).
BACKBONES = tuple(_ARCHITECTURES)
#: The ``preprocessing`` values the estimators take.
PREPROCESSING_MODES = tuple(_PREPROCESSING_MODES)

try:
    __version__ = version("sklearn-convfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BACKBONES",
    "CAM_METHODS",
    "IMAGE_EXTENSIONS",
    "CamDisplay",
    "ConvFeatureExtractor",
    "FineTuner",
    "FineTunerRegressor",
    "KerasMLPClassifier",
    "KerasMLPRegressor",
    "PREPROCESSING_MODES",
    "__version__",
    "cam",
    "cam_faithfulness",
    "cam_metrics",
    "check_weights",
    "compare_backbones",
    "count_flops",
    "load",
    "load_image_folder",
    "load_images",
    "overlay",
    "plot_cam",
    "save",
]
