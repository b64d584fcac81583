"""The methods ``cam(method=...)`` knows, by name."""

from ._ablationcam import AblationCAM
from ._eigencam import EigenCAM
from ._gradcam import GradCAM
from ._gradcampp import GradCAMPlusPlus
from ._hirescam import HiResCAM
from ._layercam import LayerCAM
from ._scorecam import ScoreCAM
from ._xgradcam import XGradCAM

METHODS = {
    method.name: method
    for method in (
        GradCAM(), GradCAMPlusPlus(), HiResCAM(), XGradCAM(), LayerCAM(), EigenCAM(),
        ScoreCAM(), AblationCAM(),
    )
}
GRADIENT_METHODS = tuple(name for name, method in METHODS.items() if method.uses_gradients)
