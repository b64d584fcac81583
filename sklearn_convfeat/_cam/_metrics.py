"""Faithfulness metrics of heatmaps, each against random saliency maps.

- deletion and insertion AUC (Petsiuk et al., "RISE", BMVC 2018);
- ROAD, remove and debias (Rong et al., "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022): MoRF and LeRF at given percentiles
  with noisy linear imputation;
- average drop and increase in confidence (Chattopadhay et al., Grad-CAM++, WACV 2018).
"""

from numbers import Integral

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._compat import Interval, StrOptions, trapezoid, validate_params
from ._adapters import make_adapter
from ._inputs import batches, check_heatmaps, check_X, resize_map, resolve_targets
from ._road import impute

METRICS = ("deletion", "insertion", "road", "confidence")


def _check_percentiles(percentiles):
    values = np.asarray(percentiles, dtype=float).ravel()
    if values.size == 0 or not np.all((values > 0) & (values < 100)):
        raise ValueError(
            f"`percentiles` must be numbers strictly between 0 and 100, the share of "
            f"pixels ROAD removes. Got {percentiles!r}."
        )
    return values


@validate_params(
    {
        "model": "no_validation",
        "X": "no_validation",
        "heatmaps": "no_validation",
        "target": "no_validation",
        "metrics": [list, tuple, StrOptions(set(METRICS))],
        "steps": [Interval(Integral, 1, None, closed="left")],
        "percentiles": ["array-like"],
        "baseline": [StrOptions({"mean", "zero"})],
        "random_state": ["random_state"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_baseline": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def cam_metrics(model, X, heatmaps, *, target="predicted", metrics=METRICS, steps=20,
                percentiles=(10, 30, 50, 70, 90), baseline="mean", random_state=None,
                batch_size=32, random_baseline=True):
    """Faithfulness metrics of heatmaps, each next to a random saliency map's.

    Every metric changes the image where the heatmap (or a random map, iid uniform
    per pixel, one per image) ranks pixels high or low, and follows the model's
    probability of the explained class:

    - ``"deletion"``: blank the pixels (to ``baseline``) most salient first, a
      fraction ``1/steps`` more at each step; area under the probability curve,
      **lower is better**.
    - ``"insertion"``: start from the image blurred (Gaussian, σ = 5 px per 224)
      and put the original pixels back most salient first; AUC, **higher is better**.
    - ``"road"``: remove the ``percentiles`` % most relevant (MoRF) or least
      relevant (LeRF) pixels and impute them from their neighbours with noise; the
      mean probability over percentiles for each order, and ``gap`` = LeRF − MoRF,
      **higher is better**.
    - ``"confidence"``: the explanation image ``blank + heatmap ⊙ (image − blank)``
      against the image: average drop ``max(0, p − o) / p`` (in %, **lower is
      better**) and increase in confidence, the share of images where ``o > p`` (in
      %, **higher is better**).

    Parameters
    ----------
    model, X, target
        As for :func:`cam`; ``target`` must be the one the heatmaps explain.
    heatmaps : ndarray or list of ndarray
        One heatmap per image of ``X``, as :func:`cam` returns them.
    metrics : str or sequence of str, default=all four
        Among ``"deletion"``, ``"insertion"``, ``"road"``, ``"confidence"``.
    steps : int, default=20
        Steps of the deletion and insertion curves (``steps + 1`` points each).
    percentiles : array-like, default=(10, 30, 50, 70, 90)
        ROAD's shares of removed pixels, each strictly between 0 and 100.
    baseline : {"mean", "zero"}, default="mean"
        Deletion: what a blanked pixel becomes, the image's mean colour or 0.
    random_state : int, RandomState instance or None, default=None
        Draws the random maps, the ties and ROAD's noise.
    batch_size : int, default=32
        Images per forward pass.
    random_baseline : bool, default=True
        Also measure the random maps (half the cost). False leaves the ``random``
        entries NaN: for comparing several methods against one random baseline.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``targets`` (the class index explained per image) and one Bunch per metric,
        each with ``score`` and ``random`` (per image), ``mean`` and ``random_mean``,
        and ``better`` ("lower" or "higher"); deletion and insertion add
        ``fractions``, ``curves`` and ``random_curves``; ROAD adds ``morf``,
        ``lerf`` and their random versions (per image and percentile);
        confidence's ``score`` is the drop, and it adds ``increase`` and
        ``random_increase`` (per image, 0 or 100).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor, cam, cam_metrics
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     ConvFeatureExtractor(weights=None, image_size=32, random_state=0),
    ...     LogisticRegression(),
    ... ).fit(X, [0, 1] * 3)
    >>> scores = cam_metrics(pipe, X[:2], cam(pipe, X[:2]), steps=4, random_state=0)
    >>> scores.deletion.score.shape, scores.road.morf.shape
    ((2,), (2, 5))
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"`metrics` must be one or more of {', '.join(map(repr, METRICS))}. Got "
            f"{metrics!r}."
        )
    percentiles = _check_percentiles(percentiles)
    rng = check_random_state(random_state)
    adapter = make_adapter(model, None, need_layer=False)
    images, single = check_X(X, adapter)
    maps = check_heatmaps(heatmaps, images, single)
    targets = resolve_targets(adapter, target, len(images))
    n_images = len(images)
    used = np.empty(n_images, dtype=int)
    per_image = {name: [] for name in metrics}
    for rows, size in batches(adapter, images, 1):
        i = rows[0]
        x = adapter.inputs(images, rows, size)
        proba = adapter.proba(x)[0]
        used[i] = int(np.argmax(proba)) if targets[i] < 0 else targets[i]
        salient = resize_map(maps[i], size)
        random = rng.random_sample(size).astype(np.float32)
        context = Bunch(adapter=adapter, x=x, target=used[i], p=proba[used[i]], rng=rng,
                        batch_size=batch_size, shared={})
        for name in metrics:
            measured = [_MEASURES[name](context, heat, steps=steps,
                                        percentiles=percentiles, baseline=baseline)
                        for heat in ((salient, random) if random_baseline else (salient,))]
            if not random_baseline:  # the same shapes, NaN
                measured.append(tuple(np.full(np.shape(part), np.nan)
                                      for part in np.broadcast_arrays(*measured[0]))
                                if isinstance(measured[0], tuple)
                                else np.full(np.shape(measured[0]), np.nan))
            per_image[name].append(measured)
    result = Bunch(targets=used)
    for name in metrics:
        result[name] = _SUMMARIES[name](per_image[name], steps, percentiles)
    return result


def _proba_of(context, batch):
    return context.adapter.proba(batch.astype(np.float32), context.batch_size)[:, context.target]


def _order(heat, rng):
    """Pixel indices, most salient first; ties in random order (upsampled maps have
    many, which must not favour the top-left corner)."""
    flat = heat.ravel()
    return np.lexsort((rng.random_sample(flat.size), -flat))


def _ranks(heat, rng):
    rank = np.empty(heat.size, dtype=np.int64)
    rank[_order(heat, rng)] = np.arange(heat.size)
    return rank.reshape(heat.shape)


def _shared(context, key, make_image):
    """An image every map of this image shares (the blank, the blurred image) and
    the model's probability for it: computed once per image, not once per map."""
    if key not in context.shared:
        image = make_image(context.x[0])
        context.shared[key] = image, _proba_of(context, image[np.newaxis])[0]
    return context.shared[key]


def _curve(context, heat, steps, start, end):
    """Probabilities as ``end``'s pixels replace ``start``'s, most salient first.

    ``start`` and ``end`` are (image, probability) pairs: the curve's two ends do
    not depend on the map, so only the ``steps - 1`` inner points cost a forward pass.
    """
    (start_image, start_p), (end_image, end_p) = start, end
    rank = _ranks(heat, context.rng)
    counts = np.rint(np.linspace(0.0, 1.0, steps + 1)[1:-1] * heat.size).astype(np.int64)
    masks = rank[np.newaxis] < counts[:, np.newaxis, np.newaxis]
    inner = (_proba_of(context, np.where(masks[..., np.newaxis], end_image, start_image))
             if counts.size else np.empty(0, dtype=np.float32))
    return np.concatenate([[start_p], inner, [end_p]])


def _blank(baseline):
    if baseline == "mean":
        return lambda x: np.broadcast_to(x.mean(axis=(0, 1), keepdims=True), x.shape).copy()
    return np.zeros_like


def _blur(x):
    from scipy.ndimage import gaussian_filter

    sigma = 5.0 * max(x.shape[:2]) / 224.0
    return gaussian_filter(x, sigma=(sigma, sigma, 0))


def _deletion(context, heat, *, steps, baseline, **_):
    image = (context.x[0], context.p)
    return _curve(context, heat, steps, image,
                  _shared(context, f"blank-{baseline}", _blank(baseline)))


def _insertion(context, heat, *, steps, **_):
    image = (context.x[0], context.p)
    return _curve(context, heat, steps, _shared(context, "blurred", _blur), image)


def _road(context, heat, *, percentiles, **_):
    x = context.x[0]
    rank = _ranks(heat, context.rng)
    noise = 0.01 * float(x.max() - x.min())
    morf, lerf = [], []
    for percentile in percentiles:
        count = round(percentile / 100 * heat.size)
        morf.append(impute(x, rank < count, noise, context.rng))
        lerf.append(impute(x, rank >= heat.size - count, noise, context.rng))
    proba = _proba_of(context, np.stack(morf + lerf))
    return proba[: len(percentiles)], proba[len(percentiles) :]


def _confidence(context, heat, **_):
    x = context.x
    blank = context.adapter.blank(x)
    explanation = blank + np.clip(heat, 0, 1)[np.newaxis, ..., np.newaxis] * (x - blank)
    return context.p, _proba_of(context, explanation)[0]


def _summarise_curves(better):
    def summarise(values, steps, _):
        curves = np.asarray(values)  # (n, 2, steps + 1)
        fractions = np.linspace(0.0, 1.0, steps + 1)
        auc = trapezoid(curves, fractions, axis=-1)
        return Bunch(score=auc[:, 0], random=auc[:, 1], mean=float(auc[:, 0].mean()),
                     random_mean=float(auc[:, 1].mean()), better=better,
                     fractions=fractions, curves=curves[:, 0], random_curves=curves[:, 1])
    return summarise


def _summarise_road(values, _, percentiles):
    morf = np.asarray([[pair[0] for pair in image] for image in values])  # (n, 2, p)
    lerf = np.asarray([[pair[1] for pair in image] for image in values])
    gap = lerf.mean(axis=-1) - morf.mean(axis=-1)
    return Bunch(score=gap[:, 0], random=gap[:, 1], mean=float(gap[:, 0].mean()),
                 random_mean=float(gap[:, 1].mean()), better="higher",
                 percentiles=percentiles, morf=morf[:, 0], lerf=lerf[:, 0],
                 random_morf=morf[:, 1], random_lerf=lerf[:, 1])


def _summarise_confidence(values, *_):
    values = np.asarray(values)  # (n, 2, 2): (p, o) for the heatmap and random
    p, o = values[..., 0], values[..., 1]
    drop = 100.0 * np.maximum(p - o, 0.0) / np.maximum(p, 1e-12)
    increase = 100.0 * (o > p)
    return Bunch(score=drop[:, 0], random=drop[:, 1], mean=float(drop[:, 0].mean()),
                 random_mean=float(drop[:, 1].mean()), better="lower",
                 increase=increase[:, 0], random_increase=increase[:, 1],
                 mean_increase=float(increase[:, 0].mean()),
                 random_mean_increase=float(increase[:, 1].mean()))


_MEASURES = {"deletion": _deletion, "insertion": _insertion, "road": _road,
             "confidence": _confidence}
_SUMMARIES = {"deletion": _summarise_curves("lower"), "insertion": _summarise_curves("higher"),
              "road": _summarise_road, "confidence": _summarise_confidence}


@validate_params(
    {
        "model": "no_validation",
        "X": "no_validation",
        "heatmaps": "no_validation",
        "target": "no_validation",
        "steps": [Interval(Integral, 1, None, closed="left")],
        "baseline": [StrOptions({"mean", "zero"})],
        "random_state": ["random_state"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def cam_faithfulness(model, X, heatmaps, *, target="predicted", steps=20, baseline="mean",
                     random_state=None, batch_size=32):
    """Deletion-curve faithfulness of heatmaps, against random saliency maps.

    The deletion metric of :func:`cam_metrics` alone (Petsiuk et al. 2018): blank
    the pixels in order of decreasing heatmap value and follow the probability of the
    explained class; the area under the curve is small when the heatmap points at
    what the model uses: **lower is better**.

    Parameters
    ----------
    model, X, heatmaps, target, steps, baseline, random_state, batch_size
        As for :func:`cam_metrics`.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``auc`` and ``random_auc`` (n_images,), ``mean_auc`` and
        ``mean_random_auc``, ``fractions`` (steps + 1,), ``curves`` and
        ``random_curves`` (n_images, steps + 1), ``targets``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn_convfeat import ConvFeatureExtractor, cam, cam_faithfulness
    >>> X = np.full((4, 32, 32, 3), 200, dtype=np.uint8)
    >>> X[::2, 8:24, 8:24] = 20  # class 0: a dark square in the middle
    >>> extractor = ConvFeatureExtractor(weights=None, image_size=32, random_state=0)
    >>> pipe = Pipeline([("feat", extractor), ("clf", LogisticRegression())])
    >>> pipe = pipe.fit(X, [0, 1, 0, 1])
    >>> heatmaps = cam(pipe, X[:2])
    >>> scores = cam_faithfulness(pipe, X[:2], heatmaps, steps=4, random_state=0)
    >>> scores.auc.shape, scores.curves.shape
    ((2,), (2, 5))
    """
    result = cam_metrics(model, X, heatmaps, target=target, metrics=("deletion",),
                         steps=steps, baseline=baseline, random_state=random_state,
                         batch_size=batch_size)
    deletion = result.deletion
    return Bunch(auc=deletion.score, random_auc=deletion.random, mean_auc=deletion.mean,
                 mean_random_auc=deletion.random_mean, fractions=deletion.fractions,
                 curves=deletion.curves, random_curves=deletion.random_curves,
                 targets=result.targets)
