"""ConvFeatureExtractor(memory=...): the content-keyed feature cache."""

import os
import pickle
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_convfeat import (
    ConvFeatureExtractor,
    _cache,
    load_image_folder,
)
from sklearn_convfeat._backbone import pool_array
from sklearn_convfeat._images import UnreadableImageWarning

SMALL = dict(weights=None, image_size=(32, 32), random_state=0, batch_size=4)
pytestmark = pytest.mark.usefixtures("empty_ram_cache")


def read_entry(path):
    return _cache.decode_entry(path.read_bytes())


def cache_files(folder, pattern="*.map"):
    return sorted(Path(folder).rglob(pattern))


@pytest.mark.parametrize("layer", [3, 5, "block4_conv2"])
@pytest.mark.parametrize("pooling", ["flatten", "avg", "max"])
def test_cached_features_equal_the_plain_ones_and_a_hit_equals_the_miss(
    tmp_path, images, layer, pooling
):
    params = dict(SMALL, layer=layer, pooling=pooling)
    plain = ConvFeatureExtractor(**params).fit_transform(images)
    cached = ConvFeatureExtractor(**params, memory=tmp_path).fit(images)
    miss = cached.transform(images)
    hit = cached.transform(images)
    np.testing.assert_allclose(miss, plain, rtol=1e-5, atol=1e-6)
    assert miss.dtype == np.float32
    np.testing.assert_array_equal(hit, miss)


def test_hits_run_nothing_and_come_from_disk_in_a_fresh_process(
    tmp_path, images, segment_calls
):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    first = extractor.transform(images)
    assert sum(n for _, _, n in segment_calls) == len(images)
    _cache.clear_ram_cache()  # what a new process starts with: only the disk
    assert_equal_and_no_pass = extractor.transform(images)
    np.testing.assert_array_equal(assert_equal_and_no_pass, first)
    assert sum(n for _, _, n in segment_calls) == len(images)


def test_a_deeper_cut_resumes_from_the_cached_shallower_map(
    tmp_path, images, segment_calls
):
    ConvFeatureExtractor(**SMALL, layer=3, memory=tmp_path).fit_transform(images)
    deeper = ConvFeatureExtractor(**SMALL, layer=5, memory=tmp_path).fit(images)
    features = deeper.transform(images)
    assert segment_calls == [  # batches of 4 + 2 images
        (None, "block3_pool", 4),
        (None, "block3_pool", 2),
        ("block3_pool", "block5_pool", 4),
        ("block3_pool", "block5_pool", 2),
    ]
    np.testing.assert_allclose(
        features, ConvFeatureExtractor(**SMALL).fit_transform(images), rtol=1e-5, atol=1e-6
    )


def test_a_deep_pass_stores_the_shallower_pool_maps_it_goes_by(
    tmp_path, images, segment_calls
):
    ConvFeatureExtractor(**SMALL, layer=5, memory=tmp_path).fit_transform(images)
    layers = {path.parent.parent.name for path in cache_files(tmp_path)}
    assert layers == {"block3_pool", "block4_pool", "block5_pool"}
    n_passes = len(segment_calls)
    for layer in (3, 4):  # shallower cuts are served without running anything
        ConvFeatureExtractor(**SMALL, layer=layer, memory=tmp_path).fit_transform(images)
    assert len(segment_calls) == n_passes


def test_grid_search_over_the_cut_depth_runs_the_base_once_per_image(
    tmp_path, image_folder, segment_calls
):
    paths, y, _ = load_image_folder(image_folder)
    grid = {"feat__layer": [3, 4, 5], "feat__pooling": ["avg", "flatten"]}

    def search(memory):
        pipe = Pipeline(
            [("feat", ConvFeatureExtractor(**SMALL, memory=memory)),
             ("clf", LogisticRegression())]
        )
        return GridSearchCV(pipe, grid, cv=2).fit(paths, y)

    cached = search(tmp_path)
    from_pixels = sum(n for start, _, n in segment_calls if start is None)
    assert from_pixels == len(paths)  # 13 fits and 12 scorings, one pass in all
    plain = search(None)
    for column in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(cached.cv_results_[column], plain.cv_results_[column])


def test_the_key_is_the_content_not_the_path(tmp_path, image_folder, segment_calls):
    paths, _, _ = load_image_folder(image_folder)
    twin = tmp_path / "copy.png"
    shutil.copyfile(paths[0], twin)
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path / "cache").fit(paths)
    features = extractor.transform(paths)
    n_passes = len(segment_calls)
    np.testing.assert_array_equal(extractor.transform([str(twin)])[0], features[0])
    assert len(segment_calls) == n_passes  # the copy is a hit

    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(twin)  # new content
    changed = extractor.transform([str(twin)])
    assert len(segment_calls) == n_passes + 1
    np.testing.assert_allclose(
        changed, ConvFeatureExtractor(**SMALL).fit_transform([str(twin)]), rtol=1e-5
    )


@pytest.mark.parametrize(
    "change",
    [
        dict(random_state=1),  # other weights
        dict(image_size=(48, 48)),
        dict(preprocessing="rescale"),
    ],
)
def test_any_setting_that_changes_the_maps_misses(tmp_path, images, change):
    ConvFeatureExtractor(**SMALL, memory=tmp_path).fit_transform(images)
    params = dict(SMALL, **change)
    cached = ConvFeatureExtractor(**params, memory=tmp_path).fit_transform(images)
    np.testing.assert_allclose(
        cached, ConvFeatureExtractor(**params).fit_transform(images), rtol=1e-5, atol=1e-6
    )
    namespaces = [p for p in (tmp_path / _cache.SUBFOLDER).iterdir() if p.is_dir()]
    assert len(namespaces) == 2


def test_a_weights_file_changed_in_place_gets_a_new_namespace(tmp_path, images):
    import keras

    from sklearn_convfeat._weights import build_base, resolve_weights

    base = build_base(resolve_weights(None, 0))
    weights = tmp_path / "vgg.weights.h5"
    base.save_weights(weights)
    params = dict(SMALL, weights=str(weights), memory=tmp_path / "cache")
    first = ConvFeatureExtractor(**params).fit_transform(images)
    base.get_layer("block1_conv1").kernel.assign(
        keras.ops.zeros_like(base.get_layer("block1_conv1").kernel)
    )
    base.save_weights(weights)
    from sklearn_convfeat._backbone import clear_cache

    clear_cache()
    second = ConvFeatureExtractor(**params).fit_transform(images)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(
        second, ConvFeatureExtractor(**dict(params, memory=None)).fit_transform(images),
        rtol=1e-5, atol=1e-6,
    )


def test_a_write_killed_midway_leaves_no_entry(tmp_path, images, monkeypatch):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)

    def dies_midway(file, array, allow_pickle=False):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(_cache.np, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        extractor.transform(images)
    assert cache_files(tmp_path) == []
    assert cache_files(tmp_path, "*.tmp") == []


def test_a_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path, images):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    expected = extractor.transform(images)
    entry = next(p for p in cache_files(tmp_path) if p.parent.parent.name == "block5_pool")
    entry.write_bytes(entry.read_bytes()[:50])  # truncated, as by a dead disk
    _cache.clear_ram_cache()
    with pytest.warns(_cache.CacheIntegrityWarning, match="damaged or was altered"):
        extractor.transform(images)
    _cache.clear_ram_cache()
    # Recomputed from the cached block4 map in a batch of another size, whose last
    # bits oneDNN may round differently (seen on AVX2-only CPUs).
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-5, atol=1e-7)
    assert read_entry(entry).shape == extractor.feature_map_shape_


def _transform_in_a_worker(memory, images):
    extractor = ConvFeatureExtractor(**SMALL, memory=memory).fit(images)
    return extractor.transform(images)


@pytest.mark.slow
def test_concurrent_worker_processes_share_the_cache_safely(tmp_path, images):
    many = np.concatenate([images] * 3)
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_transform_in_a_worker)(str(tmp_path), many) for _ in range(4)
    )
    expected = ConvFeatureExtractor(**SMALL).fit_transform(many)
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    assert cache_files(tmp_path, "*.tmp") == []
    for entry in cache_files(tmp_path):
        assert read_entry(entry).dtype == np.float32


def test_joblib_memory_without_location_keeps_maps_in_ram_only(
    tmp_path, images, segment_calls, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    extractor = ConvFeatureExtractor(**SMALL, memory=joblib.Memory(None)).fit(images)
    first = extractor.transform(images)
    n_passes = len(segment_calls)
    np.testing.assert_array_equal(extractor.transform(images), first)
    assert len(segment_calls) == n_passes
    assert list(tmp_path.iterdir()) == []


def test_joblib_memory_with_a_location_uses_that_folder(tmp_path, images):
    ConvFeatureExtractor(**SMALL, memory=joblib.Memory(tmp_path, verbose=0)).fit_transform(
        images
    )
    assert cache_files(tmp_path / _cache.SUBFOLDER)


def test_the_ram_cache_stays_within_its_budget(images, monkeypatch):
    budget = 3 * 512 * 4  # three block5_pool maps at 32x32
    monkeypatch.setattr(_cache, "RAM_CACHE", _cache._RamCache(budget))
    extractor = ConvFeatureExtractor(**SMALL, memory=joblib.Memory(None)).fit(images)
    features = extractor.transform(images)
    assert _cache.RAM_CACHE.nbytes <= budget
    np.testing.assert_array_equal(extractor.transform(images), features)


def test_a_map_evicted_before_it_is_resumed_from_is_recomputed(images, monkeypatch):
    memory = joblib.Memory(None)
    ConvFeatureExtractor(**SMALL, layer=3, memory=memory).fit_transform(images)
    real_get = _cache.FeatureStore.get

    def forgetful_get(store, layer, key, shape):
        return None if layer == "block3_pool" else real_get(store, layer, key, shape)

    monkeypatch.setattr(_cache.FeatureStore, "get", forgetful_get)
    features = ConvFeatureExtractor(**SMALL, memory=memory).fit_transform(images)
    np.testing.assert_allclose(
        features, ConvFeatureExtractor(**SMALL).fit_transform(images), rtol=1e-5, atol=1e-6
    )


def test_pickled_extractor_keeps_using_the_cache(tmp_path, images, segment_calls):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    features = extractor.transform(images)
    n_passes = len(segment_calls)
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(restored.transform(images), features)
    assert len(segment_calls) == n_passes


def test_unreadable_files_are_skipped_and_never_cached(tmp_path, image_folder):
    paths, _, _ = load_image_folder(image_folder)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    X = [*paths[:2], str(broken), *paths[2:]]
    extractor = ConvFeatureExtractor(**SMALL, on_error="skip", memory=tmp_path / "c")
    with pytest.warns(UnreadableImageWarning, match="broken.png"):
        features = extractor.fit(X).transform(X)
    assert np.isnan(features[2]).all() and not np.isnan(np.delete(features, 2, 0)).any()
    assert [index for index, _, _ in extractor.skipped_] == [2]
    assert len(cache_files(tmp_path / "c", "block5_pool/*/*.map")) == len(paths)


def test_transform_with_memory_leaves_the_estimator_unchanged(tmp_path, images):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    state = dict(extractor.__dict__)
    extractor.transform(images)
    extractor.transform(images)
    assert extractor.__dict__.keys() == state.keys()


def test_memory_that_is_a_file_is_rejected_with_the_fix(tmp_path, images):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ValueError, match=r"`memory` must be a directory.*file\.txt.*a file"):
        ConvFeatureExtractor(**SMALL, memory=str(not_a_folder)).fit(images)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root can write anywhere")
def test_memory_that_cannot_be_written_warns_and_computes(tmp_path, images):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.warns(_cache.CacheWriteWarning, match="cannot be written"):
        extractor = ConvFeatureExtractor(**SMALL, memory=locked / "cache").fit(images)
        assert extractor.transform(images).shape == (len(images), extractor.n_features_out_)


def test_memory_of_a_wrong_type_is_named(images):
    with pytest.raises(ValueError, match="'memory' parameter of ConvFeatureExtractor"):
        ConvFeatureExtractor(**SMALL, memory=3).fit(images)


def test_image_arrays_of_equal_pixels_but_other_dtype_are_separate_keys(images):
    from sklearn_convfeat._images import check_images

    as_uint8 = _cache.content_keys(check_images(images))
    as_float = _cache.content_keys(check_images(images.astype(np.float32)))
    assert len(set(as_uint8)) == len(images)
    assert set(as_uint8).isdisjoint(as_float)


def forge(entry, maps, checksum_key=None):
    """Overwrite ``entry`` with ``maps`` and a checksum made with ``checksum_key``."""
    import hashlib
    import io

    buffer = io.BytesIO()
    np.save(buffer, maps.astype(np.float32), allow_pickle=False)
    payload = buffer.getvalue()
    key = hashlib.sha256(checksum_key.encode()).digest() if checksum_key else b""
    digest = hashlib.blake2b(payload, key=key, digest_size=32).digest()
    entry.write_bytes(_cache.MAGIC + digest + payload)


def test_an_altered_entry_fails_its_checksum_and_is_rewritten(tmp_path, images):
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    expected = extractor.transform(images)
    entry = next(p for p in cache_files(tmp_path) if p.parent.parent.name == "block5_pool")
    original = read_entry(entry)
    # A well-formed map of the right shape, as a poisoner would write, old checksum.
    data = bytearray(entry.read_bytes())
    payload_start = len(_cache.MAGIC) + 32
    poisoned = np.full_like(original, 1000.0)
    data[-poisoned.nbytes:] = poisoned.tobytes()
    assert len(data) > payload_start
    entry.write_bytes(bytes(data))
    _cache.clear_ram_cache()
    with pytest.warns(_cache.CacheIntegrityWarning, match="altered"):
        np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-5, atol=1e-7)
    # Rewritten (from the cached block4 map: last bits may differ, as above).
    np.testing.assert_allclose(read_entry(entry), original, rtol=1e-5, atol=1e-7)


def test_with_a_secret_key_a_forged_checksum_is_refused(tmp_path, images, monkeypatch):
    monkeypatch.setenv(_cache.KEY_ENV_VAR, "team secret")
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
    expected = extractor.transform(images)
    entry = next(p for p in cache_files(tmp_path) if p.parent.parent.name == "block5_pool")
    forge(entry, np.full(extractor.feature_map_shape_, 1000.0))  # unkeyed checksum
    _cache.clear_ram_cache()
    with pytest.warns(_cache.CacheIntegrityWarning):
        np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-5, atol=1e-7)
    # Without the key, an entry forged with the plain checksum would have been served:
    monkeypatch.delenv(_cache.KEY_ENV_VAR)
    forge(entry, np.full(extractor.feature_map_shape_, 1000.0))
    _cache.clear_ram_cache()
    assert read_entry(entry).max() == 1000.0


def test_an_unwritable_folder_computes_without_storing(tmp_path, images, monkeypatch):
    expected = ConvFeatureExtractor(**SMALL).fit_transform(images)
    extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)

    def read_only(path, write, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_cache, "write_atomic", read_only)
    _cache.clear_ram_cache()
    with pytest.warns(_cache.CacheWriteWarning, match="cannot be written") as caught:
        features = extractor.transform(images)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert len([w for w in caught if w.category is _cache.CacheWriteWarning]) == 1


def test_a_file_where_the_cache_folder_should_be(tmp_path, images):
    (tmp_path / _cache.SUBFOLDER).write_text("not a folder")
    expected = ConvFeatureExtractor(**SMALL).fit_transform(images)
    with pytest.warns(_cache.CacheWriteWarning, match=str(tmp_path)):
        extractor = ConvFeatureExtractor(**SMALL, memory=tmp_path).fit(images)
        features = extractor.transform(images)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [1, 3])
@pytest.mark.parametrize("tta", [None, "flip"])
def test_average_pooled_features_with_memory_equal_the_plain_ones_bit_for_bit(
    tmp_path, images, layer, tta
):
    # Issue 26: the cache pooled in numpy, the plain path in TensorFlow (~5e-7 apart).
    params = dict(SMALL, layer=layer, pooling="avg", tta=tta)
    plain = ConvFeatureExtractor(**params).fit_transform(images)
    cached = ConvFeatureExtractor(**params, memory=tmp_path).fit(images)
    assert np.array_equal(cached.transform(images), plain)
    assert np.array_equal(cached.transform(images), plain)  # and from the cache


@pytest.mark.real_weights
def test_average_pooled_real_features_with_memory_are_exactly_the_plain_ones(
    tmp_path, real_weights
):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    params = dict(weights=real_weights, image_size=150, layer=4, pooling="avg")
    plain = ConvFeatureExtractor(**params).fit_transform(images)
    cached = ConvFeatureExtractor(**params, memory=tmp_path).fit_transform(images)
    assert np.array_equal(cached, plain)


def test_average_pooling_of_a_row_does_not_depend_on_its_batch():
    maps = np.random.default_rng(0).normal(size=(5, 9, 7, 3)).astype(np.float32) * 100
    for pooling in ("avg", "max", "flatten"):
        whole = pool_array(maps, pooling)
        alone = np.concatenate([pool_array(maps[i : i + 1], pooling) for i in range(5)])
        assert np.array_equal(whole, alone)
        assert whole.dtype == np.float32
    np.testing.assert_allclose(pool_array(maps, "avg"), maps.mean(axis=(1, 2)), rtol=1e-5)
