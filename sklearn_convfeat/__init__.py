"""Transfer learning with a pretrained convnet as scikit-learn estimators."""

from importlib.metadata import PackageNotFoundError, version

from ._backbone import count_flops
from ._cam import cam, cam_faithfulness, overlay, plot_cam
from ._extractor import ConvFeatureExtractor
from ._finetune import FineTuner
from ._images import IMAGE_EXTENSIONS, load_image_folder, load_images
from ._mlp import KerasMLPClassifier
from ._weights import check_weights

try:
    __version__ = version("sklearn-convfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "IMAGE_EXTENSIONS",
    "ConvFeatureExtractor",
    "FineTuner",
    "KerasMLPClassifier",
    "cam",
    "cam_faithfulness",
    "check_weights",
    "count_flops",
    "load_image_folder",
    "load_images",
    "overlay",
    "plot_cam",
    "__version__",
]
