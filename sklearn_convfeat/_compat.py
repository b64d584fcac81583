"""The scikit-learn internals this package builds on, imported in one place.

``_param_validation`` and ``_fit_context`` are private to scikit-learn but are how its
own estimators declare and check their parameters; keeping the imports here means a
scikit-learn release that moves them is fixed in one file.
"""

from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    Options,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import validate_data

__all__ = [
    "HasMethods",
    "Interval",
    "Options",
    "StrOptions",
    "fit_context",
    "validate_data",
    "validate_params",
]
