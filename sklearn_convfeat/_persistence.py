"""Saving and loading fitted models in skops' format, which cannot run code on load.

A pickle (or joblib) file is a program: loading one runs whatever its author wrote.
:func:`save` writes a skops file instead (a zip of JSON and NumPy arrays), and
:func:`load` rebuilds only types it trusts: this package's estimators and their helper
types, plus the scikit-learn estimators and NumPy types skops trusts itself. The Keras
networks of :class:`KerasMLPClassifier` and :class:`FineTuner` travel as the bytes of a
``.keras`` archive (their ``__getstate__``), which Keras rebuilds in safe mode (no
``Lambda`` code) through their ``__setstate__``.
"""

import os
import warnings
import zipfile

from ._compat import HasMethods, validate_params
from ._extractor import ConvFeatureExtractor
from ._files import write_atomic
from ._finetune import FineTuner
from ._finetune_regressor import FineTunerRegressor
from ._keras_state import SavedKerasModel
from ._mlp import KerasMLPClassifier
from ._mlp_regressor import KerasMLPRegressor
from ._pooling import TokenPooling
from ._weights import WeightsSource


def _type_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


# What load() trusts beyond skops' own defaults (scikit-learn, NumPy, builtins).
TRUSTED_TYPES = tuple(
    _type_name(cls)
    for cls in (
        ConvFeatureExtractor, KerasMLPClassifier, KerasMLPRegressor, FineTuner,
        FineTunerRegressor, WeightsSource, SavedKerasModel, TokenPooling,
    )
)


@validate_params(
    {"model": [HasMethods(["fit"])], "path": [str, os.PathLike]},
    prefer_skip_nested_validation=True,
)
def save(model, path):
    """Save a fitted estimator or pipeline to a skops file, a format that runs no code.

    The file is written atomically (a temporary file beside ``path``, then renamed):
    an interrupted save leaves no truncated file. Keras networks are stored as
    ``.keras`` archives inside it; the VGG16 base of a :class:`ConvFeatureExtractor`
    is not stored (it is rebuilt from its weights file, checked by sha256), except an
    INT8 model learned by ``fit``.

    Parameters
    ----------
    model : estimator
        A scikit-learn estimator or pipeline, fitted or not, e.g.
        ``Pipeline([("feat", ConvFeatureExtractor()), ("clf", LogisticRegression())])``.
    path : str or os.PathLike
        The file to write (by convention ``.skops``); replaced if it exists.

    Warns
    -----
    UserWarning
        When the model holds types that :func:`load` does not trust by default (a
        custom estimator, a function given as a parameter, ...): loading the file
        then needs ``trusted=[...]``.

    See Also
    --------
    load : The inverse.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor, load, save
    >>> X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     ConvFeatureExtractor(weights=None, image_size=32, random_state=0),
    ...     LogisticRegression(),
    ... ).fit(X, [0, 1, 0, 1])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.skops")
    >>> save(pipe, path)
    >>> bool((load(path).predict_proba(X) == pipe.predict_proba(X)).all())
    True
    """
    import skops.io

    if os.path.isdir(path):  # checked first: replacing a folder fails only at the end
        raise IsADirectoryError(
            f"`path` must name a file to write; got {os.fspath(path)!r}, which is an "
            "existing folder. Give a file name, e.g. "
            f"{os.path.join(os.fspath(path), 'model.skops')!r}."
        )
    data = skops.io.dumps(model)
    write_atomic(os.path.abspath(os.fspath(path)), lambda file: file.write(data))
    needed = _untrusted(skops.io.get_untrusted_types(data=data), ())
    if needed:
        warnings.warn(
            f"{path!r} holds types that load() does not trust by default: {needed}. "
            f"Loading it will need load({path!r}, trusted={needed!r}).",
            UserWarning,
            stacklevel=2,
        )


@validate_params(
    {"path": [str, os.PathLike], "trusted": [list, None], "allow_pickle": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def load(path, *, trusted=None, allow_pickle=False):
    """Load an estimator or pipeline saved by :func:`save`, without running its code.

    Only trusted types are rebuilt: this package's estimators and their helper type
    (:class:`ConvFeatureExtractor`, :class:`KerasMLPClassifier`,
    :class:`KerasMLPRegressor`, :class:`FineTuner`, :class:`FineTunerRegressor`, and
    the record of where an extractor's weights come from), scikit-learn's
    estimators and pipelines, NumPy arrays and Python builtins. Anything else is refused with an
    error that names it. Keras networks are rebuilt from their ``.keras`` bytes in
    Keras' safe mode, which refuses ``Lambda`` layers holding code.

    Parameters
    ----------
    path : str or os.PathLike
        A skops file written by :func:`save` (or ``skops.io.dump``).
    trusted : list of str or None, default=None
        More type names to trust, as reported by the error or by
        ``skops.io.get_untrusted_types(file=path)``. Only add types you have
        inspected and whose source you trust.
    allow_pickle : bool, default=False
        Whether a pickle or joblib file may be loaded, with ``joblib.load``.

        .. warning:: Loading a pickle runs any code its author put in it. Only set
           this for files you made yourself or fully trust, then re-save them with
           :func:`save`. (The command line offers it as ``--trust-pickle``.)

    Returns
    -------
    model : estimator
        The estimator or pipeline that was saved; its predictions and features are
        identical to the original's.

    Raises
    ------
    skops.io.exceptions.UntrustedTypesFoundException
        The file holds types that are not trusted; the message names them.
    ValueError
        The file is not a skops file (e.g. a pickle, with ``allow_pickle=False``).
    FileNotFoundError
        ``path`` is not a file.

    See Also
    --------
    save : The inverse.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_convfeat import ConvFeatureExtractor, load, save
    >>> X = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    >>> extractor = ConvFeatureExtractor(weights=None, image_size=32, random_state=0)
    >>> features = extractor.fit_transform(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "extractor.skops")
    >>> save(extractor, path)
    >>> bool((load(path).transform(X) == features).all())
    True
    """
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    path = os.fspath(path)
    trusted = list(trusted or [])
    wrong = [item for item in trusted if not isinstance(item, str)]
    if wrong:
        raise TypeError(
            "`trusted` must be a list of type names (str), such as "
            "'mypackage.module.MyEstimator', as skops.io.get_untrusted_types "
            f"reports them. Got {wrong[0]!r} in it."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` {path!r} is not a file: check the path.")
    if not _is_skops_file(path):
        return _load_pickle(path, allow_pickle)
    refused = _untrusted(skops.io.get_untrusted_types(file=path), trusted)
    if refused:
        error = UntrustedTypesFoundException(refused)
        notes = str(error).partition("\n\n")[2]  # skops' word on known risky types
        message = (
            f"{path!r} holds types that are not trusted: {refused}. Loading could "
            "run code they carry. Inspect them (skops.io.get_untrusted_types(file="
            "path) lists them); if you trust their source, load with "
            f"load(path, trusted={refused!r})."
        )
        error.args = (f"{message}\n\n{notes}" if notes else message,)
        raise error
    return skops.io.load(path, trusted=[*TRUSTED_TYPES, *trusted])


def _untrusted(types, trusted):
    return sorted(set(types) - set(TRUSTED_TYPES) - set(trusted))


def _is_skops_file(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "schema.json" in archive.namelist()


def _load_pickle(path, allow_pickle):
    if zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is a zip archive but not a skops file (it has no schema.json), "
            "so it was not written by sklearn_convfeat.save. A .keras model opens "
            "with keras.saving.load_model."
        )
    with open(path, "rb") as file:
        head = file.read(2)
    if head[:1] == b"\x80" or head in (b"\x1f\x8b", b"x\x9c", b"x\xda"):
        kind = "it looks like a pickle or joblib file"
    else:
        kind = "its format is unknown"
    if not allow_pickle:
        raise ValueError(
            f"{path!r} is not a skops file, the format sklearn_convfeat.save writes "
            f"({kind}). Pickle and joblib files can run arbitrary code when loaded, "
            "so they are only read on explicit request: if you trust where this file "
            "comes from, load(path, allow_pickle=True) (command line: --trust-pickle), "
            "then re-save it with sklearn_convfeat.save."
        )
    import joblib

    warnings.warn(
        f"Loading {path!r} with pickle (joblib.load): this runs any code the file "
        "holds. Only do this for files you trust, and re-save them with "
        "sklearn_convfeat.save.",
        UserWarning,
        stacklevel=3,
    )
    return joblib.load(path)
