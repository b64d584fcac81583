"""compare_backbones: rank (backbone, cut, pooling) candidates by the cross-validated
accuracy of a probe on their frozen features, with the feature cache so that the base
runs once per image and backbone for the whole comparison."""

import os
import tempfile
import time
from contextlib import nullcontext
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d

from . import _cache
from ._backbone import get_base
from ._compat import HasMethods, Interval, StrOptions, validate_params
from ._extractor import ConvFeatureExtractor, feature_store, weights_source
from ._images import check_images
from ._stages import N_STAGES
from ._validation import BASE_PARAMETER_CONSTRAINTS, IntInterval

CLASSIFIERS = ("logreg", "knn")
# Poolings only one kind of network takes: convnets "max", transformers the rest.
_KIND_SPECIFIC_POOLINGS = ("max", "cls", "cls+avg", "embedding")
_MODEL = HasMethods(["get_layer", "get_weights"])
# What ConvFeatureExtractor(pooling=...) takes (it refuses those a network cannot use).
_POOLING = ConvFeatureExtractor._parameter_constraints["pooling"][0]


@validate_params(
    {
        "X": ["array-like"],
        "y": ["array-like"],
        "backbones": [list, tuple, str, _MODEL],
        "layers": [list, tuple, str, IntInterval(1, N_STAGES, closed="both")],
        "poolings": [list, tuple, str],
        "cv": [
            Interval(Integral, 2, None, closed="left"),
            HasMethods(["split", "get_n_splits"]),
        ],
        "weights": BASE_PARAMETER_CONSTRAINTS["weights"],
        "classifier": [StrOptions(set(CLASSIFIERS)), HasMethods(["fit", "predict"])],
        "image_size": BASE_PARAMETER_CONSTRAINTS["image_size"],
        "preprocessing": BASE_PARAMETER_CONSTRAINTS["preprocessing"],
        "batch_size": BASE_PARAMETER_CONSTRAINTS["batch_size"],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "refit": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "progress": [callable, None],
    },
    prefer_skip_nested_validation=False,
)
def compare_backbones(
    X,
    y,
    *,
    backbones=("vgg16",),
    layers=(3, 4, 5),
    poolings=("avg",),
    cv=5,
    weights="imagenet",
    classifier="logreg",
    image_size=(150, 150),
    preprocessing="auto",
    batch_size=32,
    memory=None,
    refit=True,
    n_jobs=None,
    random_state=None,
    verbose=0,
    progress=None,
):
    """Rank backbones, cuts and poolings by the cross-validated accuracy of a probe.

    The first question on a new data set: which network, and where to cut it? Every
    candidate (each backbone × layer × pooling) is a :class:`ConvFeatureExtractor`;
    its features of all of ``X`` are cross-validated with a probe (a standardised
    linear or nearest-neighbour classifier), and the candidates are ranked by mean
    accuracy over the folds (ties: the faster first).

    The extractors learn nothing (frozen weights, an unsupervised transform), so each
    candidate's features are computed once on all of ``X`` and only the probe is
    cross-validated: no fold sees anything learned from its test images. Through the
    feature cache (``memory``) the base runs once per image and backbone for the
    whole comparison: the cuts of a backbone are computed shallowest first, each
    deeper one resuming from the cached maps of the one before, and the poolings of a
    cut share its maps.

    Parameters
    ----------
    X : array-like of shape (n_images, height, width[, channels]) or sequence of str
        Images or image file paths, as :meth:`ConvFeatureExtractor.fit` takes them.
    y : array-like of shape (n_images,)
        Class labels (two classes or more).
    backbones : str, keras.Model or list of them, default=("vgg16",)
        The networks, as ``ConvFeatureExtractor(backbone=...)`` takes them.
    layers : int, str or list of them, default=(3, 4, 5)
        The cuts: stage numbers 1-5 or layer names of every backbone. Cuts that come
        to the same layer (``5`` and ``"block5_pool"``) are compared once.
    poolings : str or list of str, default=("avg",)
        How each map becomes one row, as ``ConvFeatureExtractor(pooling=...)`` takes
        it: ``"avg"``, ``"max"`` or ``"flatten"`` (every value: 82944 features for
        VGG16's block3 at 150×150, slow for the probe).
    cv : int or cross-validation splitter, default=5
        Folds of :class:`~sklearn.model_selection.StratifiedKFold` (shuffled with
        ``random_state``), or a splitter of one's own. Every candidate is scored on
        the same folds.
    weights : "imagenet", None or path, default="imagenet"
        As :class:`ConvFeatureExtractor` takes it, for every backbone (a file fits one
        network only; ``None``: random weights drawn from ``random_state``).
    classifier : {"logreg", "knn"} or estimator, default="logreg"
        The probe, after a :class:`~sklearn.preprocessing.StandardScaler`:
        ``LogisticRegression(max_iter=1000)``, or ``KNeighborsClassifier`` (5
        neighbours, fewer when a training fold is smaller); or any classifier, cloned.
    image_size : (int, int), int or None, default=(150, 150)
        As :class:`ConvFeatureExtractor` takes it (None: each network's native size).
    preprocessing : str, default="auto"
        As :class:`ConvFeatureExtractor` takes it.
    batch_size : int, default=32
        Images per forward pass.
    memory : None, str, path or joblib.Memory, default=None
        The feature cache (see :class:`ConvFeatureExtractor`). None: a temporary folder,
        removed at the end (at most 0.53 MB per image for VGG16 at 150×150). A folder
        of one's own keeps the maps for later runs and for ``best_estimator``.
    refit : bool, default=True
        Fit the best candidate's probe on all of ``X`` and return it as
        ``best_estimator`` (its features come from the cache).
    n_jobs : int, default=None
        Parallel folds of the probe's cross-validation (joblib).
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds, and seeds the weights when ``weights=None``.
    verbose : int, default=0
        Progress: with 1, a line per pass of the base and per candidate; with 2,
        also a progress bar over the batches of each pass.
    progress : callable, default=None
        Called with each progress line instead of ``print`` (a logger's ``info``).

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        The comparison. ``rows``: one dict per candidate, best first, with
        ``rank``, ``backbone``, ``layer`` (as given), ``layer_name``, ``pooling``,
        ``n_features``, ``mean_test_score`` and ``std_test_score`` (accuracy over
        the folds), ``split{k}_test_score``, ``images_per_second``,
        ``extract_seconds``, ``mean_fit_time`` and ``mean_score_time`` (the
        probe's, per fold); ``pandas.DataFrame(result.rows)`` is a table of them.
        ``best``: ``rows[0]``. ``best_estimator``: the best candidate as a fitted
        ``Pipeline([("feat", extractor), ("clf", probe)])``, or None with
        ``refit=False``. ``columns``: the keys of a row, in order (a CSV header).

    Notes
    -----
    ``images_per_second`` is measured during the comparison's own pass: the number
    of images over ``extract_seconds``, the seconds spent computing the maps of the
    cut from the pixels (decoding, resizing and writing the cache included; for a
    deeper cut, the passes of the shallower cuts it resumed from are counted in).
    It is what extracting features at that cut costs on this machine, a guide to
    the speed/accuracy trade-off, not a benchmark. It is NaN (not measured) when the
    cache held some of those maps before the comparison started (a ``memory`` folder
    of an earlier run, or maps this process computed before: a process-wide
    in-memory cache fronts every folder).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convfeat import compare_backbones
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    >>> X[6:] //= 3  # the second class darker
    >>> y = [0] * 6 + [1] * 6
    >>> result = compare_backbones(X, y, layers=[3, 5], poolings=["avg", "max"], cv=3,
    ...                            weights=None, image_size=(32, 32), random_state=0)
    >>> result.columns[:6]
    ('rank', 'backbone', 'layer', 'layer_name', 'pooling', 'n_features')
    >>> len(result.rows), result.best is result.rows[0]
    (4, True)
    >>> scores = [row["mean_test_score"] for row in result.rows]
    >>> scores == sorted(scores, reverse=True)
    True
    >>> result.best_estimator.predict(X[:2]).shape
    (2,)
    """
    say = _reporter(verbose, progress)
    images = check_images(X)
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    check_consistent_length(images, y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"`y` must hold at least two classes to compare classifiers; got "
            f"{len(classes)} ({classes.tolist()}). Give images of two classes or more."
        )
    backbones = _as_list(
        backbones, "backbones", _is_backbone, "backbone names or models"
    )
    layers = _as_list(layers, "layers", _is_layer, "stage numbers 1-5 or layer names")
    poolings = _as_list(
        poolings, "poolings", _POOLING.is_satisfied_by, f"poolings, each {_POOLING}"
    )
    # One seed for every fold split and extractor (random weights: one base for all).
    seed = (
        random_state if isinstance(random_state, Integral)
        else check_random_state(random_state).randint(np.iinfo(np.int32).max)
    )
    if isinstance(cv, Integral):
        if counts.min() < cv:
            smallest = classes.tolist()[counts.argmin()]
            raise ValueError(
                f"`cv={cv}` needs at least {cv} images of each class (stratified "
                f"folds); class {smallest!r} has {counts.min()}. Pass "
                f"cv={max(2, counts.min())} or less, or give more images of that class."
            )
        cv = StratifiedKFold(cv, shuffle=True, random_state=seed)
    splits = list(cv.split(np.zeros((len(y), 1)), y))
    probe = _probe(classifier, min(len(train) for train, _ in splits))
    # TensorFlow: the cache resumes each deeper cut from the cached maps of the
    # shallower one only there, so the base runs once per image in all; an exported
    # backend would export and run each cut on its own.
    params = dict(
        weights=weights, image_size=image_size, preprocessing=preprocessing,
        batch_size=batch_size, verbose=int(verbose >= 2), random_state=seed,
        backend="tensorflow",
    )
    temporary = (
        tempfile.TemporaryDirectory(prefix="sklearn_convfeat_compare_")
        if memory is None else nullcontext(memory)
    )
    with temporary as cache:
        # Every candidate is fitted (checked) before any image goes through a base.
        params["memory"] = cache
        groups, refused = _candidates(X, backbones, layers, poolings, params)
        for pooling, labels in refused.items():
            say(f"pooling={pooling!r} skipped for {', '.join(labels)}: not one of its poolings")
        total = sum(len(group) for _, group in groups)
        say(
            f"comparing {total} candidate(s) on {len(y)} images, {len(classes)} "
            f"classes, {len(splits)}-fold CV of a {_describe(classifier)} probe"
        )
        rows, extractors = [], []
        for label, group in groups:
            rows.extend(_score_group(
                label, group, images, y, splits, probe, n_jobs, say,
                start=len(rows), total=total,
            ))
            extractors.extend(extractor for _, extractor in group)
        order = sorted(range(len(rows)), key=lambda i: _rank_key(rows[i]))
        best_estimator = None
        if refit:
            extractor = extractors[order[0]]
            fitted = clone(probe).fit(extractor.transform(images), y)
            extractor.set_params(memory=memory)  # the temporary folder goes
            best_estimator = Pipeline([("feat", extractor), ("clf", fitted)])
    rows = [{"rank": rank, **rows[i]} for rank, i in enumerate(order, start=1)]
    return Bunch(
        rows=rows, best=rows[0], best_estimator=best_estimator, columns=tuple(rows[0])
    )


def _rank_key(row):
    """Best mean accuracy first; ties: the faster first (an unmeasured speed last)."""
    speed = row["images_per_second"]
    return (-row["mean_test_score"], -speed if speed == speed else float("inf"))


def _reporter(verbose, progress):
    if not verbose:
        return lambda message: None
    if progress is not None:
        return progress
    return lambda message: print(message, flush=True)


def _is_backbone(value):
    return isinstance(value, str) or _MODEL.is_satisfied_by(value)


def _is_layer(value):
    number = isinstance(value, Integral) and not isinstance(value, bool)
    return isinstance(value, str) or (number and 1 <= value <= N_STAGES)


def _as_list(values, name, is_valid, rule):
    """``values`` as a list (a single value is a list of one), each checked."""
    if isinstance(values, (list, tuple)):
        values = list(values)
    else:
        values = [values]
    bad = [value for value in values if not is_valid(value)]
    if bad or not values:
        problem = f"{bad[0]!r} is not one" if bad else "it is empty"
        raise ValueError(
            f"`{name}` must be a list of {rule}; got {values!r}: {problem}. Pass e.g. "
            f"{name}={_EXAMPLES[name]}."
        )
    return values


_EXAMPLES = {
    "backbones": '["vgg16", "resnet50"]',
    "layers": "[3, 4, 5]",
    "poolings": '["avg", "max"]',
}


def _label(backbone):
    return backbone if isinstance(backbone, str) else backbone.name


def _describe(classifier):
    if isinstance(classifier, str):
        return {"logreg": "LogisticRegression", "knn": "KNeighborsClassifier"}[
            classifier
        ]
    return type(classifier).__name__


def _probe(classifier, smallest_training_fold):
    """The classifier every candidate's features are cross-validated with."""
    if not isinstance(classifier, str):
        return clone(classifier)
    if classifier == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    neighbours = max(1, min(5, smallest_training_fold))
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=neighbours))


def _candidates(X, backbones, layers, poolings, params):
    """``[(backbone label, [(layer as given, fitted extractor), ...]), ...]`` and
    ``{pooling: [labels of the backbones that refuse it]}``.

    Within a backbone the cuts run shallowest first (the poolings of a cut in the
    order given), so that each pass resumes from the cached maps of the last one.
    Candidates that come to the same weights, layer and pooling are kept once.
    """
    groups, seen, refused = [], set(), {}
    for backbone in backbones:
        group = []
        for layer in layers:
            for pooling in poolings:
                try:
                    extractor = ConvFeatureExtractor(
                        backbone=backbone, layer=layer, pooling=pooling, **params
                    ).fit(X)
                except ValueError as exc:
                    # A pooling of one kind of network (a transformer's class token,
                    # a convnet's max) is skipped for the other kind in a mixed run.
                    if pooling not in _KIND_SPECIFIC_POOLINGS:
                        raise
                    refused.setdefault(pooling, []).append((_label(backbone), exc))
                    continue
                key = (extractor.weights_sha256_, extractor.layer_, pooling)
                if key not in seen:
                    seen.add(key)
                    group.append((layer, extractor))
        if group:
            position = get_base(weights_source(group[0][1])).graph.position
            group.sort(key=lambda item: position.get(item[1].layer_, -1))
            groups.append((_label(backbone), group))
    for pooling, failures in refused.items():
        if not any(pooling == extractor.pooling for _, group in groups for _, extractor in group):
            raise failures[0][1]  # no backbone of the run takes it: the user's error
    return groups, {
        pooling: [label for label, _ in failures] for pooling, failures in refused.items()
    }


def _score_group(label, group, images, y, splits, probe, n_jobs, say, *, start, total):
    """The rows of one backbone's candidates, in the order computed."""
    n_images = len(y)
    seconds_to = {}  # layer name -> seconds of the passes from the pixels to it
    elapsed = 0.0
    cached_before = False
    rows = []
    for index, (layer, extractor) in enumerate(group, start=start + 1):
        name = extractor.layer_
        first = name not in seconds_to  # the first pooling of a cut computes its maps
        # Maps cached before this comparison (at this cut or a shallower one it
        # resumes from) make the time the cache's, not the network's.
        cached_before = cached_before or (first and _holds_maps(extractor, images))
        started = time.perf_counter()
        features = extractor.transform(images)
        seconds = time.perf_counter() - started
        if first:
            elapsed += seconds
            seconds_to[name] = float("nan") if cached_before else elapsed
            speed = (
                "maps cached before: speed not measured" if cached_before
                else f"{_speed(n_images, elapsed):.1f} images/s from the pixels"
            )
            say(
                f"{label}: maps up to {name} of {n_images} images in {seconds:.1f} s "
                f"({speed})"
            )
        scores = cross_validate(
            probe, features, y, cv=splits, n_jobs=n_jobs, error_score="raise"
        )
        test_scores = scores["test_score"]
        row = {
            "backbone": label,
            "layer": layer,
            "layer_name": name,
            "pooling": extractor.pooling,
            "n_features": int(features.shape[1]),
            "mean_test_score": float(np.mean(test_scores)),
            "std_test_score": float(np.std(test_scores)),
            **{f"split{k}_test_score": float(s) for k, s in enumerate(test_scores)},
            "images_per_second": _speed(n_images, seconds_to[name]),
            "extract_seconds": seconds_to[name],
            "mean_fit_time": float(np.mean(scores["fit_time"])),
            "mean_score_time": float(np.mean(scores["score_time"])),
        }
        rows.append(row)
        say(
            f"[{index}/{total}] {label} {name} {row['pooling']}: {row['n_features']} "
            f"features, CV accuracy {row['mean_test_score']:.4f} ± "
            f"{row['std_test_score']:.4f}"
        )
    return rows


def _speed(n_images, seconds):
    return float(n_images / seconds) if seconds > 0 else float("nan")


def _holds_maps(extractor, images):
    """Whether the feature cache holds the maps of any of ``images`` at the cut
    already (an earlier run, or this process's in-memory cache): their speed would be
    the cache's."""
    store = feature_store(extractor)
    return store is not None and any(
        key is not None and store.contains(extractor.layer_, key)
        for key in _cache.content_keys(images)
    )
