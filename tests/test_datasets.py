"""fetch_cats_and_dogs against a local HTTP server (loopback only, a few KB)."""

import hashlib
import http.server
import io
import os
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from sklearn_convfeat import datasets, load_image_folder
from sklearn_convfeat.datasets import fetch_cats_and_dogs

COUNTS = {("train", "cats"): 2, ("train", "dogs"): 2,
          ("validation", "cats"): 1, ("validation", "dogs"): 1}


def tiny_archive():
    """A zip with the real archive's layout, a few 8x8 JPEGs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cats_and_dogs_filtered/vectorize.py", "# not an image\n")
        for (split, label), count in COUNTS.items():
            for i in range(count):
                image = io.BytesIO()
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(image, "JPEG")
                name = f"cats_and_dogs_filtered/{split}/{label}/{label[:-1]}.{i}.jpg"
                archive.writestr(name, image.getvalue())
    return buffer.getvalue()


class Server:
    """Serves ``payload`` on 127.0.0.1; ``truncate`` closes the connection mid-body."""

    def __init__(self, payload):
        self.payload = payload
        self.truncate = False
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                body = server.payload
                if server.truncate:
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()
                if server.truncate:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cats_and_dogs.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    payload = tiny_archive()
    served = Server(payload)
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_URL", served.url)
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_SIZE", len(payload))
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_COUNTS", COUNTS)
    monkeypatch.setattr(datasets, "TIMEOUT_SECONDS", 10)
    monkeypatch.delenv(datasets.DATA_ENV_VAR, raising=False)
    yield served
    served.close()


def test_downloads_once_then_serves_from_disk(server, tmp_path):
    data = fetch_cats_and_dogs(data_home=tmp_path)
    assert data.path == str(tmp_path / "cats_and_dogs_filtered")
    assert data.class_names == ["cats", "dogs"] and "validation" in data.DESCR
    paths, y, class_names = load_image_folder(data.train)
    assert class_names == ["cats", "dogs"] and y.tolist() == [0, 0, 1, 1]
    assert all(path.endswith(".jpg") for path in paths)
    assert len(load_image_folder(data.validation)[0]) == 2
    assert sorted(os.listdir(tmp_path)) == ["cats_and_dogs_filtered"]  # no leftovers
    assert server.requests == 1

    server.close()  # the second call must not need the network
    again = fetch_cats_and_dogs(data_home=tmp_path, download_if_missing=False)
    assert again.path == data.path and server.requests == 1


def test_the_environment_variable_names_the_data_folder(server, tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV_VAR, str(tmp_path / "data"))
    assert fetch_cats_and_dogs().path == str(tmp_path / "data" / "cats_and_dogs_filtered")


def test_an_interrupted_download_leaves_nothing(server, tmp_path):
    server.truncate = True
    with pytest.raises(OSError, match="(Could not download|incomplete).*data_home"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_bad_checksum_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_SHA256", "0" * 64)
    with pytest.raises(OSError, match="corrupt: sha256 .* instead of 0000"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert os.listdir(tmp_path) == []


def test_an_archive_with_other_content_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_COUNTS", {**COUNTS, ("train", "cats"): 3})
    with pytest.raises(OSError, match="does not hold the expected images"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert os.listdir(tmp_path) == []


def test_without_download_a_missing_copy_names_both_fixes(server, tmp_path):
    with pytest.raises(OSError, match="download_if_missing=False.*SKLEARN_CONVFEAT_DATA"
                                      ".*internet"):
        fetch_cats_and_dogs(data_home=tmp_path, download_if_missing=False)
    assert server.requests == 0


def test_offline_the_error_names_both_fixes(server, tmp_path, monkeypatch):
    server.close()  # nothing listens on that port any more
    with pytest.raises(OSError, match="Could not download.*SKLEARN_CONVFEAT_DATA.*internet"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert os.listdir(tmp_path) == []


def test_data_home_may_be_the_unpacked_copy_itself(tmp_path):
    for split, label in datasets.CATS_AND_DOGS_COUNTS:
        (tmp_path / split / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / label / "a.jpg")
    data = fetch_cats_and_dogs(data_home=tmp_path, download_if_missing=False)
    assert data.path == str(tmp_path) and data.train == str(tmp_path / "train")


def serve(server, monkeypatch, payload):
    """Make ``server`` serve ``payload`` as the genuine archive (size and checksum)."""
    server.payload = payload
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(datasets, "CATS_AND_DOGS_SIZE", len(payload))


def with_member(name, data=b"x"):
    buffer = io.BytesIO(tiny_archive())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_partial_folder_is_named_and_kept_without_downloading(server, tmp_path):
    partial = tmp_path / "cats_and_dogs_filtered"
    (partial / "train" / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(partial / "train" / "cats" / "mine.jpg")
    before = listing(tmp_path)
    for _ in range(2):  # a retry neither downloads nor changes anything either
        with pytest.raises(
            OSError,
            match=r"folder '.*cats_and_dogs_filtered' is incomplete: train/cats holds 1 "
            r"of 2 images; train/dogs is missing.*Delete or move that folder and call again",
        ):
            fetch_cats_and_dogs(data_home=tmp_path)
    assert server.requests == 0 and listing(tmp_path) == before


def test_empty_class_folders_are_not_returned(server, tmp_path):
    for split, label in COUNTS:
        (tmp_path / "cats_and_dogs_filtered" / split / label).mkdir(parents=True)
    with pytest.raises(OSError, match="incomplete: train/cats holds 0 of 2 images"):
        fetch_cats_and_dogs(data_home=tmp_path, download_if_missing=False)
    with pytest.raises(OSError, match="incomplete: .*validation/dogs holds 0 of 1"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert server.requests == 0


def test_a_copy_given_as_data_home_needs_images_in_each_class(tmp_path):
    for split, label in datasets.CATS_AND_DOGS_COUNTS:
        (tmp_path / split / label).mkdir(parents=True)
        if label == "cats":
            Image.new("RGB", (8, 8)).save(tmp_path / split / label / "a.jpg")
    with pytest.raises(
        OSError, match=r"data_home='.*' has no images.*train/dogs holds 0 of 1000 images; "
        r"validation/dogs holds 0 of 500.*point data_home at another folder",
    ):
        fetch_cats_and_dogs(data_home=tmp_path, download_if_missing=False)


@pytest.mark.parametrize("name", [
    "cats_and_dogs_filtered/train/cats/../../../../x.jpg",
    "cats_and_dogs_filtered/../x.jpg",
    "/tmp/x.jpg",
])
def test_an_archive_with_a_member_outside_its_folder_is_refused(
    server, tmp_path, monkeypatch, name
):
    serve(server, monkeypatch, with_member(name))
    with pytest.raises(OSError, match=r"member '.*x\.jpg', which points outside its "
                                      r"folder.*refused whole. Nothing was kept"):
        fetch_cats_and_dogs(data_home=tmp_path)
    assert os.listdir(tmp_path) == []


def test_data_home_that_is_a_file_is_named(server, tmp_path):
    path = tmp_path / "data"
    path.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"`data_home` must be a folder.*Got "
                                                 r"'.*data', which is a file. Point"):
        fetch_cats_and_dogs(data_home=path)
    assert server.requests == 0 and path.read_text() == "not a folder"
