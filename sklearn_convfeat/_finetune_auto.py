"""FineTuner's ``"auto"`` settings, decided from the data by a linear probe of the base.

Two questions decide how to fine-tune, and a frozen linear probe answers both at the
cost of one forward pass over (at most ``PROBE_IMAGES`` of) the training images:

- **Adjust or relearn?** Linear probes (standardized average-pooled maps,
  LogisticRegression; Ridge for regression and multi-label targets) at the ends of
  the top ``PROBE_STAGES`` stages, trained on two thirds of the images and scored on
  the rest. Where the top stage probes best, its features suit the data (cats vs
  dogs, ImageNet's own kind of photo): the book's recipe *adjusts* them (``ADJUST``:
  the top stage at 1e-5, the flattened map). Where a lower stage probes better, the
  top stage's features are wrong for the data (aerial scenes: block4 0.957, block5
  0.935 test): fine-tuning has to *relearn* them (``RELEARN``: a learning rate ten
  times higher and an average-pooled head, which measured better on aerial scenes).
- **Which symmetries?** The best probe scored on the held-out images turned by a
  quarter turn. If it scores nearly as well as on the upright images (within
  ``ROTATION_TOLERANCE``), orientation carries no information for these classes
  (aerial scenes): augment with the 8 symmetries of the square. Otherwise (photos:
  upside-down cats are rare) keep the mirror and the shift.
"""

import numpy as np

from ._backbone import get_segment
from ._images import run_batches
from ._pooling import pool_array
from ._tta import view_of

#: The settings "auto" stands for, when the top stage's features suit the data and
#: when they do not. On aerial scenes (600 training images, validation accuracy
#: after 6 epochs) block5 alone at 1e-4 scored 0.906 with the flattened map, 0.920
#: averaged; block4 + block5 0.920 too, at 4 times the epoch cost; 3e-5 0.882,
#: 3e-4 0.873. So relearning keeps ``unfreeze=1``. The averaged map's head learns
#: slowly at 1e-4 (0.789 after phase 1, 0.920 after phase 2); at 1e-3 0.896, 0.926.
ADJUST = {"unfreeze": 1, "head_learning_rate": 1e-4, "fine_tune_learning_rate": 1e-5,
          "pooling": "flatten"}
RELEARN = {"unfreeze": 1, "head_learning_rate": 1e-3, "fine_tune_learning_rate": 1e-4,
           "pooling": "avg"}
#: The stages probed, counted from the top.
PROBE_STAGES = 3
#: At most this many training images are probed (a stratified sample beyond).
PROBE_IMAGES = 1000
#: A quarter turn may cost the probe this much of its held-out score and still count
#: as a symmetry of the data. Measured (VGG16, 150 px, 1000 training images): aerial
#: scenes 0.964 upright, 0.940 turned (the probe learned from upright images only);
#: cats vs dogs 0.937, 0.772.
ROTATION_TOLERANCE = 0.05
# Two thirds of the probed images train each probe, one third scores it.
_HELD_OUT = 1 / 3


def probe_data(source, entry, preprocessing, image_size, images, y, *, stratify,
               seed, batch_size, verbose=0):
    """Held-out probe scores of the top stages, upright and turned.

    Returns ``{"stage_scores": {stage: score}, "best_stage": stage,
    "upright_score": score, "rotated_score": score or None, "n_images": n}``;
    ``rotated_score`` is None for non-square images (no quarter turn keeps their
    shape). Scores are accuracy for class labels and R² otherwise. None when the
    images are too few to hold a third of them out (at least one per class).
    """
    rows = np.arange(len(y))
    if len(rows) > PROBE_IMAGES:
        rows = _split(len(y), PROBE_IMAGES / len(y), seed, stratify)[1]
    split = _split(len(rows), _HELD_OUT, seed + 1,
                   None if stratify is None else stratify[rows])
    if split is None:
        return None
    fit_rows, score_rows = split
    stages = list(entry.graph.stage_ends)[-PROBE_STAGES:]
    ends = [entry.graph.stage_ends[stage] for stage in stages]
    features = _stage_features(
        source, entry, ends, preprocessing, image_size, images.subset(rows),
        batch_size, "image", verbose,
    )
    probed = y[rows]
    scores = {
        stage: _probe_score(features[end][fit_rows], probed[fit_rows],
                            features[end][score_rows], probed[score_rows], stratify)
        for stage, end in zip(stages, ends)
    }
    # The top stage wins ties: its features are the ones fine-tuning starts from.
    best = max(reversed(stages), key=lambda stage: scores[stage])
    rotated = None
    if image_size[0] == image_size[1]:
        best_end = entry.graph.stage_ends[best]
        turned = _stage_features(
            source, entry, [best_end], preprocessing, image_size,
            images.subset(rows[score_rows]), batch_size, "rot90", verbose,
        )[best_end]
        rotated = _probe_score(features[best_end][fit_rows], probed[fit_rows],
                               turned, probed[score_rows], stratify)
    return {
        "stage_scores": {int(stage): float(score) for stage, score in scores.items()},
        "best_stage": int(best),
        "upright_score": float(scores[best]),
        "rotated_score": None if rotated is None else float(rotated),
        "n_images": int(len(rows)),
    }


def auto_setting(name, report, n_stages):
    """What ``name="auto"`` stands for (a key of ``ADJUST``): ``ADJUST``'s value when
    the top stage probes best (or there is no probe), else ``RELEARN``'s."""
    value = (ADJUST if top_stage_fits(report) else RELEARN)[name]
    return min(value, n_stages) if name == "unfreeze" else value


def top_stage_fits(report):
    """Whether the top stage probes best (True without a probe: the book's case)."""
    return report is None or report["best_stage"] == max(report["stage_scores"])


def auto_augment(report):
    """``"dihedral"`` when a quarter turn leaves the probe's score (nearly) unchanged,
    else ``"cached"`` (also without a probe)."""
    rotated = None if report is None else report["rotated_score"]
    if rotated is not None and rotated >= report["upright_score"] - ROTATION_TOLERANCE:
        return "dihedral"
    return "cached"


def _stage_features(source, entry, ends, preprocessing, image_size, images,
                    batch_size, view, verbose):
    """{stage end: average-pooled features of ``view`` of ``images``}, one pass."""
    segment = get_segment(source, None, ends[-1], preprocessing, capture=tuple(ends))
    pooled = {}

    def run(batch):
        maps = segment(view_of(batch, view))
        rows = [pool_array(maps[end], "avg") for end in ends]
        return np.concatenate(rows, axis=1)

    widths = [int(entry.map_shape(end, image_size)[-1]) for end in ends]
    out, _ = run_batches(run, images, n_outputs=sum(widths), image_size=image_size,
                         batch_size=max(batch_size, 32), verbose=verbose)
    start = 0
    for end, width in zip(ends, widths):
        pooled[end] = out[:, start : start + width]
        start += width
    return pooled


def _split(n_samples, fraction, seed, stratify):
    """(fit rows, held-out rows), stratified when ``stratify`` is given; None when
    the samples are too few for it."""
    from sklearn.model_selection import train_test_split

    try:
        fit, held_out = train_test_split(
            np.arange(n_samples), test_size=fraction, stratify=stratify,
            random_state=seed,
        )
    except ValueError:  # fewer samples than classes to hold out, or a lone class member
        return None
    if len(fit) < 2:
        return None
    return np.sort(fit), np.sort(held_out)


def _probe_score(X_fit, y_fit, X_score, y_score, stratify):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classify = stratify is not None  # class labels, not multi-label or regression
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=1000) if classify else Ridge(alpha=1.0),
    )
    finite = np.isfinite(X_fit).all(axis=1)  # unreadable files are NaN rows
    probe.fit(X_fit[finite], y_fit[finite])
    kept = np.isfinite(X_score).all(axis=1)
    return probe.score(X_score[kept], y_score[kept])
