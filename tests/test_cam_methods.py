"""The CAM methods' formulas, targets, smoothing, determinism, and the metrics."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_convfeat import ConvFeatureExtractor, cam, cam_metrics
from sklearn_convfeat._cam._base import LayerBatch
from sklearn_convfeat._cam._gradcampp import GradCAMPlusPlus
from sklearn_convfeat._cam._road import impute


def tiny_convnet(n_classes=3):
    init = [keras.initializers.GlorotUniform(seed=k) for k in range(2)]
    inputs = keras.Input((12, 12, 3))
    maps = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                               kernel_initializer=init[0], name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    outputs = keras.layers.Dense(n_classes, activation="softmax",
                                 kernel_initializer=init[1])(pooled)
    return keras.Model(inputs, outputs)


def images(n, size=12, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def pipeline():
    X = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    return make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, layer=3, random_state=0),
        LogisticRegression(max_iter=500),
    ).fit(X, [0, 1] * 3), X


def test_gradcampp_matches_the_reference_implementation():
    """pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights (Eq. 19 with exp(score)),
    rewritten in numpy channels-last, on the same maps and gradients."""
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(size=(2, 5, 5, 6)), 0)
    grads = rng.normal(scale=0.3, size=maps.shape)
    g2 = grads**2
    g3 = g2 * grads
    sum_activations = maps.sum(axis=(1, 2))
    aij = g2 / (2 * g2 + sum_activations[:, None, None, :] * g3 + 1e-6)
    aij = np.where(grads != 0, aij, 0)
    reference = (np.maximum(grads, 0) * aij).sum(axis=(1, 2))
    batch = LayerBatch(None, maps, grads, np.zeros(2, int), None, None, 1)
    np.testing.assert_allclose(GradCAMPlusPlus().channel_weights(batch), reference,
                               rtol=1e-3)  # theirs adds 1e-6 to the denominator


def test_per_image_targets_equal_one_call_per_target():
    model = tiny_convnet()
    x = images(3)
    per_image = cam(model, x, target=[0, 2, 1], method="layercam")
    for i, target in enumerate([0, 2, 1]):
        np.testing.assert_allclose(per_image[i], cam(model, x[i], target=target,
                                                      method="layercam"), atol=1e-6)
    np.testing.assert_allclose(cam(model, x, target=None), cam(model, x), atol=0)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "eigencam"])
def test_methods_are_deterministic(method):
    model = tiny_convnet()
    x = images(2)
    np.testing.assert_array_equal(cam(model, x, method=method, target=0),
                                  cam(model, x, method=method, target=0))


def test_noise_and_augmentation_averaging(pipeline):
    pipe, X = pipeline
    plain = cam(pipe, X[:2])
    noisy = cam(pipe, X[:2], n_samples=3, noise=0.1, random_state=0)
    assert noisy.shape == plain.shape and noisy.dtype == np.float32
    assert not np.allclose(noisy, plain)
    np.testing.assert_array_equal(noisy, cam(pipe, X[:2], n_samples=3, noise=0.1,
                                             random_state=0))
    augmented = cam(pipe, X[:2], aug_smooth=True)
    assert augmented.shape == plain.shape
    assert augmented.min() >= 0 and np.allclose(augmented.max(axis=(1, 2)), 1)


def test_eigencam_ignores_the_target_and_ablation_uses_it():
    model = tiny_convnet()
    x = images(2)
    np.testing.assert_allclose(cam(model, x, method="eigencam", target=0),
                               cam(model, x, method="eigencam", target=2))
    assert not np.allclose(cam(model, x, method="ablationcam", target=0),
                           cam(model, x, method="ablationcam", target=2))


def test_imputation_reproduces_a_linear_ramp():
    """A plane is its neighbours' weighted mean: noiseless imputation recovers it."""
    rows, cols = np.mgrid[:10, :12]
    image = np.stack([rows * 3.0 + cols, 2.0 * cols, 50 - rows], axis=-1).astype(np.float32)
    removed = np.zeros((10, 12), bool)
    removed[3:7, 4:9] = True
    np.testing.assert_allclose(impute(image, removed, 0.0, np.random.default_rng(0)),
                               image, atol=1e-4)


def test_metrics_on_a_hand_computed_case(pipeline):
    pipe, X = pipeline
    x = X[:1]
    heat = np.zeros((32, 32))
    heat[:16] = 1.0  # the top half first, then the bottom half
    result = cam_metrics(pipe, x, heat[None], metrics=["deletion", "confidence"],
                         steps=2, random_state=0)
    image = x[0].astype(np.float32)
    mean = image.mean(axis=(0, 1))
    half = image.copy()
    half[:16] = mean
    blank = np.broadcast_to(mean, image.shape)
    target = result.targets[0]
    p = pipe.predict_proba(np.stack([image, half, blank]))[:, target]
    expected_auc = 0.5 * (0.5 * (p[0] + p[1]) + 0.5 * (p[1] + p[2]))
    assert result.deletion.score[0] == pytest.approx(expected_auc, abs=1e-5)
    explanation = np.array([123.68, 116.779, 103.939], np.float32) * np.ones_like(image)
    explanation[:16] = image[:16]
    o = pipe.predict_proba(explanation[None])[0, target]
    drop = 100 * max(p[0] - o, 0) / p[0]
    assert result.confidence.score[0] == pytest.approx(drop, abs=1e-3)
    assert result.confidence.increase[0] == (100.0 if o > p[0] else 0.0)


def test_curve_ends_do_not_depend_on_the_map(pipeline):
    """Deletion runs from the image to the blank, insertion from the blurred image to
    the image, whatever the map: with one step the curves are those two ends."""
    from scipy.ndimage import gaussian_filter

    pipe, X = pipeline
    heat = np.random.default_rng(1).random((2, 32, 32))
    result = cam_metrics(pipe, X[:2], heat, metrics=["deletion", "insertion"], steps=1,
                         random_state=0)
    images = X[:2].astype(np.float32)
    blank = np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    sigma = 5.0 * 32 / 224
    blurred = np.stack([gaussian_filter(image, sigma=(sigma, sigma, 0)) for image in images])
    rows, targets = np.arange(2), result.targets
    p, p_blank, p_blurred = (pipe.predict_proba(batch)[rows, targets]
                             for batch in (images, blank, blurred))
    for curves in (result.deletion.curves, result.deletion.random_curves):
        np.testing.assert_allclose(curves, np.column_stack([p, p_blank]), atol=1e-5)
    for curves in (result.insertion.curves, result.insertion.random_curves):
        np.testing.assert_allclose(curves, np.column_stack([p_blurred, p]), atol=1e-5)


def test_metric_and_target_errors(pipeline):
    pipe, X = pipeline
    heat = np.ones((1, 32, 32))
    with pytest.raises(ValueError, match=r"`percentiles` must be numbers strictly "
                       r"between 0 and 100.* Got \(0, 50\)"):
        cam_metrics(pipe, X[:1], heat, percentiles=(0, 50))
    with pytest.raises(ValueError, match=r"`metrics` must be one or more of 'deletion'"
                       r".* Got \('delete',\)"):
        cam_metrics(pipe, X[:1], heat, metrics=("delete",))
    with pytest.raises(ValueError, match=r"X has 2 images, target has 3 values"):
        cam(pipe, X[:2], target=[0, 1, 1])
    with pytest.raises(ValueError, match=r"`target` must be one of the model's classes "
                       r"\[0, 1\] or an index 0 to 1 into them\. Got 7"):
        cam(pipe, X[:2], target=[0, 7])
