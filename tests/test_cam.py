import gc
import weakref

import joblib
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from sklearn_convfeat import (
    ConvFeatureExtractor,
    FineTuner,
    KerasMLPClassifier,
    cam,
    cam_faithfulness,
    overlay,
    plot_cam,
    save,
)
from sklearn_convfeat._cam import METHODS as ALL_METHODS
from sklearn_convfeat._cam._adapters import ModelAdapter, make_adapter
from sklearn_convfeat._cam._compiled import tracing_counts
from sklearn_convfeat._extractor import tensorflow_runner
from sklearn_convfeat.cli import main

METHODS = list(ALL_METHODS)
KINDS = ["finetuner", "linear_pipeline", "mlp_pipeline", "keras_model"]


def random_images(n, height=40, width=36, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def small_convnet(n_classes=3, size=32, seed=0):
    """A nested model: Sequential([Sequential(conv layers), pooling, Dense(softmax)])."""
    init = [keras.initializers.GlorotUniform(seed=seed + k) for k in range(3)]
    features = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                                kernel_initializer=init[0], name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                                kernel_initializer=init[1], name="conv2"),
        ],
        name="features",
    )
    return keras.Sequential(
        [
            features,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(n_classes, activation="softmax",
                               kernel_initializer=init[2], name="output"),
        ]
    )


@pytest.fixture(scope="module")
def finetuner():
    X = random_images(8)
    X[::2] //= 4
    y = np.array(["night", "day"] * 4)
    return FineTuner(
        weights=None, image_size=32, head_epochs=1, fine_tune_epochs=1, hidden_units=8,
        batch_size=8, random_state=0,
    ).fit(X, y)


@pytest.fixture(scope="module")
def linear_pipeline():
    X = random_images(8)
    return make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, pooling="avg", random_state=0),
        StandardScaler(),
        LogisticRegression(),
    ).fit(X, ["a", "b"] * 4)


@pytest.fixture(scope="module")
def mlp_pipeline():
    X = random_images(9)
    return make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, layer=4, pooling="max",
                             random_state=0),
        MinMaxScaler(),
        KerasMLPClassifier(hidden_units=8, epochs=2, random_state=0),
    ).fit(X, [0, 1, 2] * 3)


@pytest.fixture(scope="module")
def keras_model():
    return small_convnet()


def pattern_images(n, size=32, side=6, seed=0):
    """Noise; class 1 adds a white square somewhere in the top-left quadrant."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 160, size=(n, size, size, 3)).astype(np.uint8)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        row, col = rng.integers(0, size // 2 - side + 1, size=2)
        X[i, row : row + side, col : col + side] = 255
    return X, y


@pytest.fixture(scope="module")
def pattern_task():
    """A small convnet trained to tell images with the square from those without."""
    X, y = pattern_images(64)
    init = [keras.initializers.GlorotUniform(seed=k) for k in range(3)]
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            kernel_initializer=init[0]),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            kernel_initializer=init[1], name="last_conv"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init[2]),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(X, y, epochs=15, batch_size=16, shuffle=False, verbose=0)
    X_test, y_test = pattern_images(20, seed=1)
    accuracy = np.mean((model.predict_on_batch(X_test.astype(np.float32))[:, 0] > 0.5) == y_test)
    assert accuracy >= 0.9  # otherwise the localisation tests below mean nothing
    return model, X, y, X_test[y_test == 1]


def share_of_peaks_top_left(heatmaps):
    size = heatmaps.shape[1]
    peaks = [np.unravel_index(np.argmax(heat), heat.shape) for heat in heatmaps]
    return np.mean([row < size // 2 and col < size // 2 for row, col in peaks])


# --------------------------------------------------------------------- heatmaps


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_heatmaps_are_float32_in_unit_range_at_the_image_size(kind, method, request):
    model = request.getfixturevalue(kind)
    heatmaps = cam(model, random_images(3), method=method, max_channels=8)
    assert heatmaps.shape == (3, 40, 36)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0
    for heat in heatmaps:  # scaled by its maximum, or all zero without evidence
        assert heat.max() == pytest.approx(1.0) or heat.max() == 0.0


def test_heatmaps_follow_each_file_size(linear_pipeline, tmp_path):
    paths = []
    for i, size in enumerate([(30, 50), (64, 48), (30, 50)]):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(random_images(1, *size, seed=i)[0]).save(path)
        paths.append(str(path))
    heatmaps = cam(linear_pipeline, paths)
    assert isinstance(heatmaps, list)
    assert [heat.shape for heat in heatmaps] == [(30, 50), (64, 48), (30, 50)]
    same_size = cam(linear_pipeline, [paths[0], paths[2]])
    assert isinstance(same_size, np.ndarray) and same_size.shape == (2, 30, 50)
    np.testing.assert_allclose(same_size[0], heatmaps[0], atol=1e-6)
    assert cam(linear_pipeline, paths[1]).shape == (64, 48)  # one path, one heatmap


def test_one_image_gives_one_heatmap_like_its_batch(finetuner):
    images = random_images(2)
    batch = cam(finetuner, images)
    np.testing.assert_allclose(cam(finetuner, images[1]), batch[1], atol=1e-5)
    grey = images[..., 0]
    assert cam(finetuner, grey[0]).shape == (40, 36)


def test_batches_give_the_same_heatmaps(mlp_pipeline):
    images = random_images(5)
    np.testing.assert_allclose(
        cam(mlp_pipeline, images, batch_size=2), cam(mlp_pipeline, images), atol=1e-5
    )


@pytest.mark.parametrize("kind", ["finetuner", "linear_pipeline", "mlp_pipeline"])
def test_targets_and_probabilities_are_the_models(kind, request):
    model = request.getfixturevalue(kind)
    images = random_images(4)
    scores = cam_faithfulness(model, images, cam(model, images), steps=2, random_state=0)
    # The curve starts at the intact image: the model's probability of the class.
    expected = model.predict_proba(images)
    np.testing.assert_array_equal(scores.targets, expected.argmax(axis=1))
    np.testing.assert_allclose(
        scores.curves[:, 0], expected[np.arange(4), scores.targets], atol=1e-5
    )


def test_target_selects_the_class_by_label_or_index(finetuner):
    images = random_images(2)
    by_label = cam(finetuner, images, target="night")
    np.testing.assert_allclose(cam(finetuner, images, target=1), by_label)
    per_image = cam(finetuner, images, target=["day", "night"])
    np.testing.assert_allclose(per_image[1], by_label[1])
    assert not np.allclose(cam(finetuner, images, target="day"), by_label)


# ------------------------------------------------------------- pattern localisation


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_peaks_on_the_pattern_the_convnet_learned(pattern_task, method):
    model, _, _, positives = pattern_task
    heatmaps = cam(model, positives, target=1, method=method, max_channels=None)
    assert share_of_peaks_top_left(heatmaps) >= 0.8


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_points_at_the_planted_square(pattern_task, method):
    """Pointing game: a hit when the peak lies on the square (2 px margin, less than
    one cell of the 16x16 map)."""
    model, _, _, _ = pattern_task
    X_test, y_test = pattern_images(20, seed=1)
    positives = X_test[y_test == 1]
    squares = (positives == 255).all(axis=-1)
    heatmaps = cam(model, positives, target=1, method=method, max_channels=None)
    hits = []
    for heat, square in zip(heatmaps, squares):
        row, col = np.unravel_index(np.argmax(heat), heat.shape)
        rows, cols = np.nonzero(square)
        hits.append(rows.min() - 2 <= row <= rows.max() + 2
                    and cols.min() - 2 <= col <= cols.max() + 2)
    assert np.mean(hits) >= 0.8


@pytest.mark.parametrize("layer", [None, "block2_pool"])
def test_heatmap_peaks_on_the_pattern_with_a_linear_pipeline(pattern_task, layer):
    _, X, y, positives = pattern_task
    pipe = make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, layer="block2_pool",
                             pooling="max", random_state=0),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    ).fit(X, y)
    # layer=None backpropagates from block2_conv2; "block2_pool" is the exact gradient.
    assert share_of_peaks_top_left(cam(pipe, positives, target=1, layer=layer)) >= 0.8


def test_gradcam_beats_random_saliency_on_deletion(pattern_task):
    model, _, _, positives = pattern_task
    heatmaps = cam(model, positives, target=1)
    scores = cam_faithfulness(model, positives, heatmaps, target=1, steps=10,
                              random_state=0)
    assert scores.mean_auc < scores.mean_random_auc - 0.1
    assert np.mean(scores.auc < scores.random_auc) >= 0.8


# ------------------------------------------------------------------ what is explained


def logits_twin(model):
    """The same network with a linear output layer: its outputs are the logits."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.layers[-1].activation = keras.activations.linear
    return twin


def reference_gradcam(model, layer, images, target):
    """The Keras example's Grad-CAM on a flat Functional model's logits."""
    twin = logits_twin(model)
    grad_model = keras.Model(twin.input, [twin.get_layer(layer).output, twin.output])
    with tf.GradientTape() as tape:
        maps, logits = grad_model(images)
        score = logits[:, target]
    weights = tf.reduce_mean(tape.gradient(score, maps), axis=(1, 2))
    heat = tf.nn.relu(tf.einsum("nhwk,nk->nhw", maps, weights)).numpy()
    return heat / heat.max(axis=(1, 2), keepdims=True)


def functional_convnet():
    init = [keras.initializers.GlorotUniform(seed=k) for k in range(3)]
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            kernel_initializer=init[0], name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu",
                            kernel_initializer=init[1], name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=init[2])(x)
    return keras.Model(inputs, outputs)


def test_gradcam_matches_the_keras_example_on_the_logits():
    model = functional_convnet()
    images = random_images(3, 16, 16).astype(np.float32) / 255
    # Same-size feature map: no upsampling between the two.
    expected = reference_gradcam(model, "conv1", images, 2)
    np.testing.assert_allclose(cam(model, images, target=2, layer="conv1"), expected,
                               atol=1e-5)


def test_gradient_is_taken_before_a_saturated_sigmoid():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(2, 3, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=0)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_initializer=keras.initializers.Constant(1e4)),
    ])
    images = random_images(2, 8, 8)
    assert np.all(model.predict_on_batch(images.astype(np.float32)) == 1.0)
    # The probability's gradient is exactly 0 here; the logit's is not.
    heatmaps = cam(model, images, target=1)
    assert np.all(heatmaps.max(axis=(1, 2)) == pytest.approx(1.0))


def test_nested_vgg16_in_a_sequential_works():
    base = keras.applications.VGG16(weights=None, include_top=False,
                                    input_shape=(32, 32, 3))
    nested = keras.Sequential([base, keras.layers.Flatten(),
                               keras.layers.Dense(3, activation="softmax")])
    nested.build((None, 32, 32, 3))
    images = random_images(2, 32, 32).astype(np.float32)
    for method in METHODS:
        assert cam(nested, images, layer="block4_conv3", target=0, method=method,
                   max_channels=4).shape == (2, 32, 32)
    # The same layers, flat: the heatmaps must not depend on the nesting.
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for layer in base.layers[1:] + nested.layers[1:]:
        x = layer(x)
    flat = keras.Model(inputs, x)
    np.testing.assert_allclose(
        cam(nested, images, layer="block5_conv2", target=1),
        cam(flat, images, layer="block5_conv2", target=1),
        atol=1e-5,
    )


def test_nested_and_flat_models_agree(keras_model):
    flat = keras.Sequential([keras.Input((32, 32, 3)), *keras_model.layers[0].layers,
                             *keras_model.layers[1:]])
    images = random_images(3, 32, 32)
    for method in METHODS:
        np.testing.assert_allclose(
            cam(keras_model, images, target=1, method=method),
            cam(flat, images, target=1, method=method),
            atol=1e-5,
        )


# ------------------------------------------------------- linear classifiers: exact


def linear_case(pooling, n_classes, layer="block3_pool"):
    X = random_images(3 * n_classes, 32, 32)
    pipe = make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, layer=layer, pooling=pooling,
                             random_state=0),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    ).fit(X, np.arange(len(X)) % n_classes)
    return pipe, X[:2].astype(np.float32)


def pool(maps, pooling):
    if pooling == "avg":
        return maps.mean(axis=(1, 2))
    if pooling == "max":
        return maps.max(axis=(1, 2))
    return maps.reshape(len(maps), -1)


@pytest.mark.parametrize("pooling, n_classes", [("flatten", 2), ("avg", 3), ("max", 2)])
def test_linear_gradient_matches_finite_differences(pooling, n_classes):
    pipe, images = linear_case(pooling, n_classes)
    explainer = make_adapter(pipe, "block3_pool")
    assert explainer.analytic
    targets = np.array([0, n_classes - 1])
    maps, grads, _, _ = explainer.gradients(images, targets)
    maps = maps.astype(np.float64)

    def score(perturbed, n):
        decision = pipe[1:].decision_function(pool(perturbed, pooling))
        if n_classes == 2:
            return decision[n] if targets[n] == 1 else -decision[n]
        return decision[n, targets[n]]

    rng = np.random.default_rng(0)
    eps = 1e-2
    for n in range(2):
        cells = [tuple(rng.integers(0, s) for s in maps.shape[1:]) for _ in range(3)]
        if pooling == "max":  # the cells the max comes from, where the gradient is
            cells = [(*np.unravel_index(maps[n, :, :, c].argmax(), maps.shape[1:3]), c)
                     for c in (0, 7, 99)]
        for cell in cells:
            perturbed = maps.copy()
            perturbed[(n, *cell)] += eps
            estimate = (score(perturbed, n) - score(maps, n)) / eps
            assert grads[(n, *cell)] == pytest.approx(estimate, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("pooling", ["flatten", "avg", "max"])
def test_exact_linear_gradient_equals_backpropagation(pooling):
    pipe, images = linear_case(pooling, 2)
    exact = make_adapter(pipe, "block3_pool")
    targets = np.array([1, 0])
    maps, grads, logits, _ = exact.gradients(images, targets)
    # The base class's gradients: backpropagation through TensorFlow.
    tf_maps, tf_grads, tf_logits, _ = ModelAdapter.gradients(exact, images, targets)
    np.testing.assert_allclose(maps, tf_maps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, tf_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads, tf_grads, rtol=1e-4, atol=1e-8)


# ------------------------------------------------------------ compiled functions


def compiled_state(owner):
    return tracing_counts(owner)


# Every method, and the smoothing options, which run the same functions on new inputs.
CALLS = [{"method": method} for method in METHODS] + [
    {"method": "gradcam", "aug_smooth": True},
    {"method": "layercam", "n_samples": 2},
    {"method": "gradcam++", "n_samples": 2, "aug_smooth": True},
]


@pytest.mark.parametrize("kind", [
    pytest.param("finetuner", marks=pytest.mark.slow), "linear_pipeline",
    pytest.param("mlp_pipeline", marks=pytest.mark.slow), "keras_model",
])
def test_repeated_calls_trace_nothing_new(kind, request):
    model = request.getfixturevalue(kind)
    owners = {make_adapter(model, None)._owner_key("forward", None)[0]}
    if kind.endswith("pipeline"):
        owners.add(tensorflow_runner(model[0]).model)
    images = random_images(5)
    for keywords in CALLS:
        cam(model, images[:2], max_channels=2, **keywords)
    before = {id(owner): compiled_state(owner) for owner in owners}
    for n in (1, 5, 3):
        for keywords in CALLS:
            cam(model, images[:n], max_channels=2, target=0, **keywords)
    assert {id(owner): compiled_state(owner) for owner in owners} == before
    counts = [count for state in before.values() for count in state.values()]
    assert counts and set(counts) == {1}


def adapter_spy(monkeypatch):
    """Record the number of model inputs of every forward pass cam's adapter runs."""
    from sklearn_convfeat._cam import _api

    sizes = []

    def spied(run):
        def spy(x, *args, **kwargs):
            sizes.append(len(x))
            return run(x, *args, **kwargs)
        return spy

    def spying_adapter(model, layer, **keywords):
        adapter = make_adapter(model, layer, **keywords)
        for name in ("forward", "logits", "gradients"):
            setattr(adapter, name, spied(getattr(adapter, name)))
        return adapter

    monkeypatch.setattr(_api, "make_adapter", spying_adapter)
    return sizes


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("kind", ["finetuner", "linear_pipeline", "keras_model"])
def test_perturbation_methods_hold_at_most_batch_size_inputs(kind, method, request,
                                                            monkeypatch):
    # Memory bound of Score-CAM and Ablation-CAM: however many images and channels,
    # no pass of the model sees more than batch_size inputs.
    model = request.getfixturevalue(kind)
    images = random_images(7)
    max_channels = None if kind == "keras_model" else 16  # all 8 channels, or 16 of 512
    expected = cam(model, images, method=method, max_channels=max_channels)
    sizes = adapter_spy(monkeypatch)
    heatmaps = cam(model, images, method=method, max_channels=max_channels, batch_size=3)
    assert max(sizes) <= 3
    assert sum(sizes) > 4 * len(images)  # the perturbed copies went through the spy
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status to read the RSS from")


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_repeated_calls_do_not_grow_memory(keras_model, method):
    images = random_images(4)
    for _ in range(3):  # warm-up: compiled functions and allocator pools
        cam(keras_model, images, method=method)
    gc.collect()
    before = rss_mb()
    for _ in range(20):
        cam(keras_model, images, method=method)
    gc.collect()
    assert rss_mb() - before < 50


def test_compiled_functions_do_not_keep_a_model_alive():
    model = small_convnet()
    cam(model, random_images(2), method="gradcam")
    model_ref = weakref.ref(model)
    del model
    gc.collect()
    assert model_ref() is None


# -------------------------------------------------------------------------- errors


def test_unknown_layer(finetuner, linear_pipeline, keras_model):
    with pytest.raises(ValueError, match=r"`layer` must be the name of a layer of the "
                       r"model\. Got 'blok5_conv3'\. Its convolutional layers are"):
        cam(finetuner, random_images(1), layer="blok5_conv3")
    with pytest.raises(ValueError, match=r"`layer` must be a layer name of the extractor's "
                       r"base \(VGG16\) or a stage number 1-5\. Got 'blok5_conv3'"):
        cam(linear_pipeline, random_images(1), layer="blok5_conv3")
    with pytest.raises(ValueError, match=r"4-D .* Got layer='gap', whose output has "
                       r"shape \(None, 8\)"):
        cam(keras_model, random_images(1), layer="gap")


def test_layer_after_the_extractors_cut(mlp_pipeline):
    with pytest.raises(ValueError, match=r"at or before the extractor's cut, layer_="
                       r"'block4_pool'.* Got layer='block5_conv3'; use e\.g\. "
                       r"'block4_conv3'"):
        cam(mlp_pipeline, random_images(1), layer="block5_conv3")


def test_default_layer_is_the_last_conv_layer_before_the_cut(mlp_pipeline, finetuner):
    assert make_adapter(mlp_pipeline, None).layer == "block4_conv3"
    assert make_adapter(finetuner, None).layer == "block5_conv3"
    np.testing.assert_allclose(cam(finetuner, random_images(1), layer="block5_conv3"),
                               cam(finetuner, random_images(1)))


def test_unknown_target(finetuner, keras_model):
    with pytest.raises(ValueError, match=r"`target` must be one of the model's classes "
                       r"\['day', 'night'\] or an index 0 to 1 into them\. Got 'noon'"):
        cam(finetuner, random_images(1), target="noon")
    with pytest.raises(ValueError, match=r"`target` must be an output index of the "
                       r"Keras model, 0 to 2\. Got 3"):
        cam(keras_model, random_images(1), target=3)
    with pytest.raises(ValueError, match=r"X has 2 images, target has 3 values"):
        cam(finetuner, random_images(2), target=["day"] * 3)


def test_unfitted_models():
    with pytest.raises(NotFittedError, match="FineTuner"):
        cam(FineTuner(weights=None), random_images(1))
    unfitted = make_pipeline(ConvFeatureExtractor(weights=None), LogisticRegression())
    with pytest.raises(NotFittedError, match="ConvFeatureExtractor"):
        cam(unfitted, random_images(1))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 8, 8, 3)])
def test_images_of_the_wrong_rank(finetuner, shape):
    with pytest.raises(ValueError, match=r"X must be a batch of images .* Got an array "
                       rf"of shape \({shape[0]},"):
        cam(finetuner, np.zeros(shape))


def test_unknown_method_and_bad_numbers(finetuner):
    with pytest.raises(ValueError, match=r"The 'method' parameter of cam must be a str "
                       r"among .*'hirescam'.* Got 'gradcamm' instead"):
        cam(finetuner, random_images(1), method="gradcamm")
    with pytest.raises(ValueError, match=r"The 'max_channels' parameter of cam must be "
                       r"an int in the range \[1, inf\) or None\. Got 0 instead"):
        cam(finetuner, random_images(1), method="scorecam", max_channels=0)
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of cam must be an "
                       r"int in the range \[1, inf\)\. Got 0 instead"):
        cam(finetuner, random_images(1), batch_size=0)
    with pytest.raises(ValueError, match=r"The 'noise' parameter of cam must be a float "
                       r"in the range \(0\.0, inf\)\. Got -1"):
        cam(finetuner, random_images(1), n_samples=2, noise=-1.0)


def test_unsupported_models(linear_pipeline):
    with pytest.raises(TypeError, match=r"`model` must be a fitted FineTuner; a fitted "
                       r"Pipeline.*or a built Keras .*Got a LogisticRegression"):
        cam(LogisticRegression(), random_images(1))
    X = random_images(6)
    with_pca = make_pipeline(
        ConvFeatureExtractor(weights=None, image_size=32, pooling="avg", random_state=0),
        PCA(2), LogisticRegression(),
    ).fit(X, [0, 1] * 3)
    with pytest.raises(TypeError, match=r"a PCA step .* only affine steps"):
        cam(with_pca, X)
    no_extractor = make_pipeline(StandardScaler(), LogisticRegression())
    with pytest.raises(TypeError, match=r"first step is a StandardScaler, not a "
                       r"ConvFeatureExtractor"):
        cam(no_extractor, X)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(TypeError, match="subclassed Keras model"):
        cam(Subclassed(), X)


def test_faithfulness_arguments(linear_pipeline):
    images = random_images(2)
    with pytest.raises(ValueError, match=r"X has 2 images, heatmaps has 1"):
        cam_faithfulness(linear_pipeline, images, np.zeros((1, 40, 36)))
    with pytest.raises(ValueError, match=r"The 'baseline' parameter of cam_faithfulness "
                       r"must be a str among .* Got 'blur' instead"):
        cam_faithfulness(linear_pipeline, images, np.zeros((2, 40, 36)), baseline="blur")


def test_faithfulness_scores(linear_pipeline):
    images = random_images(3)
    heatmaps = cam(linear_pipeline, images)
    scores = cam_faithfulness(linear_pipeline, images, heatmaps, steps=4, random_state=0)
    for auc in (scores.auc, scores.random_auc):
        assert auc.shape == (3,) and np.all((auc >= 0) & (auc <= 1))
    assert scores.curves.shape == scores.random_curves.shape == (3, 5)
    assert scores.mean_auc == pytest.approx(scores.auc.mean())
    np.testing.assert_allclose(scores.fractions, [0, 0.25, 0.5, 0.75, 1])
    again = cam_faithfulness(linear_pipeline, images, heatmaps, steps=4, random_state=0)
    np.testing.assert_array_equal(again.random_auc, scores.random_auc)
    # Both orders end with every pixel blanked: here a black image.
    zero = cam_faithfulness(linear_pipeline, images, heatmaps, steps=4, baseline="zero",
                            random_state=0)
    black = linear_pipeline.predict_proba(np.zeros((1, 40, 36, 3)))[0, zero.targets]
    np.testing.assert_allclose(zero.curves[:, -1], black, atol=1e-6)
    np.testing.assert_allclose(zero.random_curves[:, -1], black, atol=1e-6)


# ------------------------------------------------------------------------- overlay


def test_overlay_is_an_rgb_uint8_image_of_the_pictures_size():
    image = random_images(1, 40, 36)[0]
    blended = overlay(image, np.random.default_rng(0).random((5, 4)))
    assert blended.shape == (40, 36, 3) and blended.dtype == np.uint8
    assert overlay(image[..., 0], np.ones((40, 36))).shape == (40, 36, 3)
    np.testing.assert_array_equal(overlay(image, np.zeros((2, 2)), alpha=0.0), image)


def test_overlay_of_a_file(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(random_images(1, 20, 30)[0]).save(path)
    assert overlay(path, np.ones((3, 3))).shape == (20, 30, 3)


def test_builtin_jet_is_matplotlibs_jet():
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(0, 1, 101).reshape(1, -1)
    ours = overlay(np.zeros((1, 101, 3)), values, alpha=1.0).astype(float)
    theirs = matplotlib.colormaps["jet"](values)[..., :3] * 255
    np.testing.assert_allclose(ours, theirs, atol=5)  # theirs is a 256-entry table
    viridis = overlay(np.zeros((1, 101, 3)), values, alpha=1.0, colormap="viridis")
    expected = np.rint(matplotlib.colormaps["viridis"](values)[..., :3] * 255)
    np.testing.assert_allclose(viridis, expected, atol=1)


def test_overlay_errors():
    image = random_images(1)[0]
    with pytest.raises(ValueError, match=r"The 'alpha' parameter of overlay must be a "
                       r"float in the range \[0\.0, 1\.0\]\. Got 1\.5 instead"):
        overlay(image, np.ones((2, 2)), alpha=1.5)
    with pytest.raises(ValueError, match=r"`heatmap` must be one heatmap of shape "
                       r"\(height, width\)\. Got shape \(2, 4, 4\)"):
        overlay(image, np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"`image` must be one image .* shape "
                       r"\(2, 40, 36, 3\)"):
        overlay(random_images(2), np.ones((2, 2)))
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=r"`colormap` must be 'jet' or a matplotlib "
                       r"colormap name .* Got 'jett'"):
        overlay(image, np.ones((2, 2)), colormap="jett")


# ------------------------------------------------------------------------ plot_cam


def test_plot_cam_draws_and_saves_a_figure(finetuner, tmp_path):
    pytest.importorskip("matplotlib")
    images = random_images(2)
    path = tmp_path / "cam.png"
    figure = plot_cam(finetuner, images, target="night", path=path)
    assert len(figure.axes) == 6
    title = figure.axes[0].get_title()
    proba = finetuner.predict_proba(images)[0, 1]
    assert title == f"night (p={proba:.2f})"
    # The picture is drawn as it is: float RGB above 1 would be clipped to white.
    shown = np.asarray(figure.axes[0].images[0].get_array())
    np.testing.assert_array_equal(shown, images[0])
    with Image.open(path) as saved:
        assert saved.format == "PNG"
    heatmaps = cam(finetuner, images[:1])
    given = plot_cam(finetuner, images[0], heatmaps[0])
    assert len(given.axes) == 3


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def saved_pipeline(linear_pipeline, tmp_path):
    path = tmp_path / "model.skops"
    save(linear_pipeline, path)
    return str(path)


@pytest.fixture
def image_files(tmp_path):
    paths = []
    for i, size in enumerate([(40, 36), (30, 50)]):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(random_images(1, *size, seed=i)[0]).save(path)
        paths.append(str(path))
    return paths


def test_cli_cam_writes_an_overlay_png(saved_pipeline, image_files, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["cam", image_files[1], "--model", saved_pipeline, "-o", str(out),
                 "--target", "b", "--method", "gradcam++"]) == 0
    with Image.open(out) as written:
        assert written.format == "PNG" and written.size == (50, 30)
    assert "class 'b' (p=" in capsys.readouterr().out


def test_cli_cam_writes_one_file_per_image(saved_pipeline, image_files, tmp_path):
    folder = tmp_path / "cams"
    folder.mkdir()
    assert main(["cam", *image_files, "--model", saved_pipeline, "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["photo0_cam.png", "photo1_cam.png"]
    pattern = str(tmp_path / "{stem}-heat.png")
    assert main(["cam", *image_files, "--model", saved_pipeline, "-o", pattern,
                 "--layer", "block5_pool"]) == 0
    assert (tmp_path / "photo1-heat.png").is_file()


def test_cli_cam_errors_are_one_line(saved_pipeline, image_files, tmp_path, capsys):
    out = str(tmp_path / "out.png")
    cases = [
        (["--model", str(tmp_path / "missing.joblib")], "missing.joblib"),
        (["--model", saved_pipeline, "--target", "c"], "`target` must be one of"),
        (["--model", saved_pipeline, "--layer", "block6_conv1"], "`layer` must be"),
    ]
    for extra, message in cases:
        assert main(["cam", image_files[0], "-o", out, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("convfeat cam: error: ") and message in err and "\n" not in err
    assert main(["cam", *image_files, "--model", saved_pipeline, "-o", out]) == 2
    assert "2 images" in capsys.readouterr().err
    not_a_model = tmp_path / "dict.joblib"
    joblib.dump({"a": 1}, not_a_model)
    assert main(["cam", image_files[0], "--model", str(not_a_model), "-o", out,
                 "--trust-pickle"]) == 2
    assert "holds a dict" in capsys.readouterr().err
