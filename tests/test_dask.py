"""sklearn_convfeat.dask and grid search on a real LocalCluster (2 worker processes)."""

import importlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")

import joblib
import psutil  # a dependency of distributed
from distributed import Client, LocalCluster, get_task_stream
from distributed.core import Status
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_convfeat import ConvFeatureExtractor, FineTuner
from sklearn_convfeat._weights import WeightsSource
from sklearn_convfeat.dask import transform, upload_weights

TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # other thread counts, other float rounding


@pytest.fixture(scope="module")
def client():
    """A real cluster: 2 worker processes (each imports TensorFlow), loopback only."""
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="3GiB",
    )
    client = Client(cluster)
    try:  # (closing takes ~4 s: processes that imported TensorFlow linger at exit)
        yield client
        pids = list(client.run(os.getpid).values())
    finally:
        client.close()
        cluster.close()
    assert cluster.status == Status.closed
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(pid) for pid in pids), "worker processes survived"


@pytest.fixture(scope="module")
def images():
    """24 RGB 32×32 images; dark ones are class 0."""
    X = np.random.default_rng(0).integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    X[::2] //= 4
    return X


@pytest.fixture(scope="module")
def extractor(images):
    return ConvFeatureExtractor(
        weights=None, image_size=32, batch_size=4, random_state=0
    ).fit(images)


@pytest.fixture(scope="module")
def expected(extractor, images):
    return extractor.transform(images)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, images):
    """Eight PNG files of the first images, then one unreadable file."""
    folder = tmp_path_factory.mktemp("dask_images")
    files = []
    for i, image in enumerate(images[:8]):
        files.append(str(folder / f"{i}.png"))
        Image.fromarray(image).save(files[-1])
    files.append(str(folder / "broken.png"))
    with open(files[-1], "wb") as file:
        file.write(b"not a png")
    return files


# --- without a cluster: imports and errors ------------------------------------------


def test_importing_the_package_does_not_import_dask():
    code = (
        "import sys, sklearn_convfeat; "
        "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_import_without_dask_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "sklearn_convfeat.dask")
    monkeypatch.setitem(sys.modules, "dask", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "sklearn-convfeat\[dask\]"'):
        importlib.import_module("sklearn_convfeat.dask")


def test_errors_name_the_parameter_and_the_fix(extractor, images):
    X = da.from_array(images, chunks=(6, -1, -1, -1))
    with pytest.raises(NotFittedError, match="ConvFeatureExtractor instance is not fitted"):
        transform(ConvFeatureExtractor(weights=None), X)
    with pytest.raises(TypeError, match="`extractor` must be a fitted .* Got Pipeline"):
        transform(Pipeline([("feat", extractor)]), X)
    with pytest.raises(
        TypeError, match=r"`X` must be a Dask collection.*Got numpy.ndarray.*da.from_array"
    ):
        transform(extractor, images)
    with pytest.raises(
        ValueError,
        match=r"chunked along the first.*Got \(4, 2, 1, 1\) blocks per axis.*"
        r"X.rechunk\(\{1: -1, 2: -1, 3: -1\}\)",
    ):
        transform(extractor, da.from_array(images, chunks=(6, 16, -1, -1)))
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*Got shape \(24, 32, 32, 2\)"):
        transform(extractor, X[..., :2])
    with pytest.raises(ValueError, match="must hold image file paths.*Got dtype int64"):
        transform(extractor, da.arange(4))
    with pytest.raises(TypeError, match="`extractor` must be a fitted .* Got str"):
        upload_weights(None, "extractor")


def test_dataframe_with_several_columns_is_refused(extractor, paths):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_pandas(pd.DataFrame({"path": paths, "label": 0}), npartitions=2)
    with pytest.raises(
        ValueError, match=r"exactly one column.*Got 2 columns \['path', 'label'\].*X\['path'\]"
    ):
        transform(extractor, frame)


def test_only_weights_files_are_uploaded():
    fitted = ConvFeatureExtractor(weights=None, image_size=32).fit(np.zeros((1, 32, 32, 3)))
    assert upload_weights(None, fitted) is None  # a seed: nothing to ship
    fitted._weights_source = WeightsSource("imagenet")  # as if fitted from Keras' cache
    with pytest.raises(
        ValueError, match="weights='imagenet' from Keras' cache.*fit the extractor with"
    ):
        upload_weights(None, fitted)


# --- on the cluster -----------------------------------------------------------------


@pytest.mark.slow
def test_array_on_the_cluster_equals_one_process(client, extractor, images, expected):
    n_features = extractor.n_features_out_
    features = transform(extractor, da.from_array(images, chunks=(5, -1, -1, -1)))
    assert features.shape == (24, n_features)
    assert features.chunks == ((5, 5, 5, 5, 4), (n_features,))
    assert features.dtype == np.float32
    result = features.compute()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, **TOLERANCE)
    grey = images[..., 0]  # grey images without a channel axis go through as well
    on_cluster = transform(extractor, da.from_array(grey, chunks=(12, -1, -1))).compute()
    np.testing.assert_allclose(on_cluster, extractor.transform(grey), **TOLERANCE)


@pytest.mark.slow
def test_each_worker_builds_the_base_once(client, extractor, images, expected):
    def count_builds():  # runs in each worker process
        from sklearn_convfeat import _backbone

        original = getattr(_backbone, "_original_build", _backbone.build_base)
        _backbone._original_build = original
        _backbone.n_builds = 0

        def counted(source):
            _backbone.n_builds += 1
            return original(source)

        _backbone.build_base = counted
        _backbone.clear_cache()

    def builds():
        from sklearn_convfeat import _backbone

        _backbone.build_base = _backbone._original_build
        return _backbone.n_builds

    client.run(count_builds)
    X = da.from_array(images, chunks=(3, -1, -1, -1))
    with get_task_stream(client) as stream:
        result = transform(extractor, X).compute()
    np.testing.assert_allclose(result, expected, **TOLERANCE)
    blocks = Counter(  # tasks of the transform itself, not of the input chunks
        task["worker"]
        for task in stream.data
        if isinstance(task["key"], tuple)
        and task["key"][0].startswith("convfeat-features")
    )
    assert sum(blocks.values()) == 8
    assert max(blocks.values()) >= 4  # some worker ran several blocks ...
    n_builds = client.run(builds)
    for worker, count in n_builds.items():  # ... and built the base once for all
        assert count == (1 if blocks[worker] else 0), (worker, blocks, n_builds)


@pytest.mark.slow
def test_paths_in_bags_dataframes_and_arrays(client, paths):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    extractor = ConvFeatureExtractor(
        weights=None, image_size=32, batch_size=4, on_error="skip", random_state=0
    ).fit(paths)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        expected = extractor.transform(paths)
    assert np.isnan(expected[-1]).all() and not np.isnan(expected[:-1]).any()
    collections = {
        "bag": db.from_sequence(paths, npartitions=3),
        "series": dd.from_pandas(pd.Series(paths), npartitions=2),
        "frame": dd.from_pandas(pd.DataFrame({"path": paths}), npartitions=2),
        "array": da.from_array(np.asarray(paths, dtype=object), chunks=4),
    }
    for kind, collection in collections.items():
        features = transform(extractor, collection)
        assert features.shape[1] == extractor.n_features_out_, kind
        np.testing.assert_allclose(
            features.compute(), expected, **TOLERANCE, err_msg=kind
        )


@pytest.mark.slow
def test_weights_file_missing_on_workers_then_uploaded(client, tmp_path, images):
    keras = pytest.importorskip("keras")
    path = tmp_path / "vgg16_random.weights.h5"
    keras.applications.VGG16(weights=None, include_top=False).save_weights(path)
    extractor = ConvFeatureExtractor(weights=str(path), image_size=32).fit(images)
    expected = extractor.transform(images[:4])
    elsewhere = tmp_path / "elsewhere.weights.h5"
    path.rename(elsewhere)  # as if the workers did not share this file system
    X = da.from_array(images[:4], chunks=(4, -1, -1, -1))  # one block: one build
    with pytest.raises(
        FileNotFoundError,
        match=r"not readable on worker tcp://127\.0\.0\.1.*"
        r"upload_weights\(client, extractor\)",
    ):
        transform(extractor, X).compute()
    elsewhere.rename(path)
    name = upload_weights(client, extractor)  # reads the file here, on the client
    path.rename(elsewhere)
    try:
        np.testing.assert_allclose(transform(extractor, X).compute(), expected, **TOLERANCE)
    finally:
        client.unregister_worker_plugin(name)


@pytest.mark.slow
@pytest.mark.parametrize("memory", [None, "cache"])
def test_grid_search_over_layers_with_the_dask_backend(client, images, tmp_path, memory):
    y = np.arange(len(images)) % 2
    feat = ConvFeatureExtractor(weights=None, image_size=32, pooling="avg", random_state=0)
    pipe = Pipeline([("feat", feat), ("clf", LogisticRegression(max_iter=1000))])
    grid = {"feat__layer": [4, 5]}
    sequential = GridSearchCV(pipe, grid, cv=2).fit(images, y)
    if memory is not None:  # one feature cache on disk, written by both workers
        pipe.set_params(feat__memory=str(tmp_path / memory))
    with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        on_cluster = GridSearchCV(pipe, grid, cv=2).fit(images, y)
    assert len(stream.data) >= 2  # the fits ran on the workers
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(on_cluster.cv_results_[key], sequential.cv_results_[key])
    assert on_cluster.best_params_ == sequential.best_params_
    if memory is not None:
        assert any((tmp_path / memory).rglob("*")), "the workers wrote no cache entry"


@pytest.mark.slow
def test_grid_search_over_unfreeze_with_the_dask_backend(client, images):
    tuner = FineTuner(
        weights=None, image_size=32, head_epochs=1, fine_tune_epochs=1, batch_size=4,
        random_state=0,
    )
    y = np.where(np.arange(12) % 2, "day", "night")
    search = GridSearchCV(tuner, {"unfreeze": [0, 1]}, cv=2, refit=False)
    with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        search.fit(images[:12], y)
    assert len(stream.data) >= 2
    assert [p["unfreeze"] for p in search.cv_results_["params"]] == [0, 1]
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.slow
def test_a_worker_killed_mid_job_still_gives_every_row(
    client, extractor, images, expected
):
    def slow(block):  # makes the kill land while blocks are still running
        time.sleep(0.5)
        return block

    pids = client.run(os.getpid)
    X = da.from_array(images, chunks=(3, -1, -1, -1)).map_blocks(slow)
    # Only these two workers: the one restarted after the kill (a new address) would
    # first import TensorFlow, which only makes the test slower.
    persisted = client.persist(transform(extractor, X), workers=list(pids))
    futures = distributed.futures_of(persisted)
    deadline = time.monotonic() + 60
    while not any(future.done() for future in futures) and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = [worker for worker, keys in client.processing().items() if keys]
    assert busy, "the job finished before a worker could be killed"
    victim = pids[busy[0]]
    os.kill(victim, signal.SIGKILL)
    result = persisted.compute()  # the lost blocks run again on the survivor
    np.testing.assert_allclose(result, expected, **TOLERANCE)
    client.wait_for_workers(2, timeout=60)  # the nanny started a new process
    assert victim not in client.run(os.getpid).values()
