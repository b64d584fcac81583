"""The scikit-learn internals this package builds on, imported in one place.

``_param_validation`` and ``_fit_context`` are private to scikit-learn but are how its
own estimators declare and check their parameters; keeping the imports here means a
scikit-learn release that moves them is fixed in one file.
"""

import numpy as np
from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    Options,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import validate_data

# numpy 2.0 renamed trapz; TensorFlow 2.16, our oldest, needs numpy < 2.
trapezoid = getattr(np, "trapezoid", None) or np.trapz

__all__ = [
    "HasMethods",
    "Interval",
    "Options",
    "StrOptions",
    "fit_context",
    "trapezoid",
    "validate_data",
    "validate_params",
]
