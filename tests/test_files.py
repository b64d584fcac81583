import os
import stat
import threading

import pytest

from sklearn_convfeat._files import (
    remove_stale_temporaries,
    write_atomic,
    write_folder_atomic,
)
from sklearn_convfeat._lru import LRUCache


def test_write_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "entry.bin"
    write_atomic(path, lambda file: file.write(b"first"))
    write_atomic(path, lambda file: file.write(b"second"), durable=True)
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["entry.bin"]  # no temporaries left


def test_write_atomic_leaves_nothing_when_the_writer_fails(tmp_path):
    path = tmp_path / "entry.bin"
    path.write_bytes(b"old")

    def fail(file):
        file.write(b"half")
        raise KeyboardInterrupt  # as if the process died midway

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["entry.bin"]


def test_files_get_the_umask_mode_not_a_private_one(tmp_path):
    # Shared caches must stay readable by the folder's other users (mkstemp gives 0600).
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "entry.bin", lambda file: file.write(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "entry.bin").st_mode) == 0o644


def test_write_folder_atomic_keeps_the_first_folder(tmp_path):
    path = tmp_path / "model.openvino"
    write_folder_atomic(path, lambda folder: open(os.path.join(folder, "a"), "w").close())
    write_folder_atomic(path, lambda folder: open(os.path.join(folder, "b"), "w").close())
    assert os.listdir(path) == ["a"]
    assert os.listdir(tmp_path) == ["model.openvino"]


def test_write_folder_atomic_removes_a_failed_folder(tmp_path):
    def fail(folder):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "model.openvino", fail)
    assert os.listdir(tmp_path) == []


def test_what_killed_writers_left_is_removed_once_stale(tmp_path):
    path = tmp_path / "vgg16-x.onnx"
    stale, fresh = tmp_path / ".vgg16-x.onnx.1.a.tmp", tmp_path / ".vgg16-x.onnx.2.b.tmp"
    other = tmp_path / ".vgg16-y.onnx.1.c.tmp"
    for leftover in (stale, fresh, other):
        leftover.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    os.utime(other, (0, 0))
    remove_stale_temporaries(str(path))
    # A fresh one may be another process's write in progress; other files' are theirs.
    assert not stale.exists() and fresh.exists() and other.exists()


def test_lru_builds_once_and_evicts_the_least_recently_used():
    cache, built = LRUCache(max_entries=2), []

    def build(key):
        built.append(key)
        return key.upper()

    assert cache.get_or_build("a", lambda: build("a")) == "A"
    assert cache.get_or_build("b", lambda: build("b")) == "B"
    assert cache.get_or_build("a", lambda: build("a")) == "A"  # a is now the newest
    cache.get_or_build("c", lambda: build("c"))
    assert "b" not in cache and "a" in cache and len(cache) == 2
    assert built == ["a", "b", "c"]


def test_lru_builds_a_key_once_when_threads_race():
    cache, built = LRUCache(max_entries=2), []
    start = threading.Barrier(8)

    def build():
        built.append(1)
        return object()

    def ask(results):
        start.wait()
        results.append(cache.get_or_build("key", build))

    results = []
    threads = [threading.Thread(target=ask, args=(results,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and len({id(r) for r in results}) == 1
