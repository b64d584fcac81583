"""Example data: the cats-vs-dogs subset of TensorFlow's image-classification tutorials.

:func:`fetch_cats_and_dogs` follows scikit-learn's ``fetch_*`` functions: it downloads
once into a data folder, checks the archive, unpacks it atomically, and afterwards
serves it from disk without touching the network.
"""

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from sklearn.utils import Bunch

from ._compat import validate_params

DATA_ENV_VAR = "SKLEARN_CONVFEAT_DATA"
CATS_AND_DOGS_URL = (
    "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
)
# Google publishes no checksum for this archive, and none could be computed here (no
# internet). Its size is public (the Content-Length logged by many downloads from
# 2019 to 2025), so the archive is checked by size, by zip CRCs (testzip) and by its
# content (CATS_AND_DOGS_COUNTS). Set a sha256 here to check that too.
CATS_AND_DOGS_SHA256 = None
CATS_AND_DOGS_SIZE = 68_606_236
CATS_AND_DOGS_FOLDER = "cats_and_dogs_filtered"
CATS_AND_DOGS_COUNTS = {
    ("train", "cats"): 1000,
    ("train", "dogs"): 1000,
    ("validation", "cats"): 500,
    ("validation", "dogs"): 500,
}
TIMEOUT_SECONDS = 60  # per blocking network operation, not for the whole download
_MAX_UNPACKED_BYTES = 2**30  # refuse archives that would unpack to more (zip bombs)
_DESCR = """Cats vs dogs, filtered (TensorFlow tutorials' subset of the Kaggle data).

JPEG photos of cats and dogs, 2000 for training (1000 per class) and 1000 for
validation (500 per class), in class-per-folder layout:
<path>/train/{cats,dogs}/*.jpg and <path>/validation/{cats,dogs}/*.jpg.
Source: https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip
(a subset of the Kaggle "Dogs vs. Cats" competition data, Microsoft Research Asirra).
"""


@validate_params(
    {"data_home": [str, os.PathLike, None], "download_if_missing": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def fetch_cats_and_dogs(*, data_home=None, download_if_missing=True):
    """Load the cats-vs-dogs photos of TensorFlow's tutorials, downloading them once.

    The archive (65.4 MB) holds 2000 training and 1000 validation JPEG photos of cats
    and dogs, half of each class. It is downloaded (``urllib`` only) into a temporary
    file in the data folder, checked, and unpacked into a temporary folder beside the
    target, which is then renamed into place: an interrupted or corrupt download
    leaves nothing behind, and a later call never sees a half-unpacked copy.

    The check: the archive's size must be the published 68,606,236 bytes, every
    member must pass its zip CRC check, and it must hold exactly 1000/1000 training
    and 500/500 validation images of cats/dogs. No checksum of this archive is
    published; set ``sklearn_convfeat.datasets.CATS_AND_DOGS_SHA256`` to check one.

    Parameters
    ----------
    data_home : str, os.PathLike or None, default=None
        The data folder: the data lives in ``<data_home>/cats_and_dogs_filtered``.
        None means the environment variable ``SKLEARN_CONVFEAT_DATA`` if set, else
        scikit-learn's data folder (``SCIKIT_LEARN_DATA``, by default
        ``~/scikit_learn_data``). It may also point straight at an unpacked copy
        (the folder holding ``train/`` and ``validation/``).
    download_if_missing : bool, default=True
        Whether to download the data when it is not in the data folder; if False,
        a missing copy raises an ``OSError``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the attributes:

        path : str
            The unpacked folder, holding ``train/`` and ``validation/``.
        train, validation : str
            ``path/train`` and ``path/validation``: class-per-folder directories
            (``cats/``, ``dogs/``) ready for :func:`load_image_folder`.
        class_names : list of str
            ``["cats", "dogs"]``.
        DESCR : str
            A description of the data.

    Raises
    ------
    OSError
        The data is missing and cannot be downloaded (no internet, or
        ``download_if_missing=False``), or the download was interrupted or is
        corrupt. The message names the two ways to provide the data.

    Examples
    --------
    Offline, point ``data_home`` at an unpacked copy (here a tiny stand-in):

    >>> import pathlib, tempfile
    >>> from PIL import Image
    >>> from sklearn_convfeat import load_image_folder
    >>> from sklearn_convfeat.datasets import fetch_cats_and_dogs
    >>> home = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["train/cats/cat.0.jpg", "train/dogs/dog.0.jpg",
    ...              "validation/cats/cat.1.jpg", "validation/dogs/dog.1.jpg"]:
    ...     path = home / "cats_and_dogs_filtered" / name
    ...     path.parent.mkdir(parents=True, exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(path)
    >>> data = fetch_cats_and_dogs(data_home=home, download_if_missing=False)
    >>> paths, y, class_names = load_image_folder(data.train)
    >>> class_names, len(paths)
    (['cats', 'dogs'], 2)
    """
    home = _data_home(data_home)
    for folder in (home, os.path.join(home, CATS_AND_DOGS_FOLDER)):
        if _is_unpacked(folder):
            return _bunch(folder)
    if not download_if_missing:
        raise OSError(
            f"The cats-vs-dogs data is not in {home!r} (no {CATS_AND_DOGS_FOLDER}/"
            f"train and validation folders there) and download_if_missing=False. "
            + _HOW_TO_PROVIDE
        )
    os.makedirs(home, exist_ok=True)
    target = os.path.join(home, CATS_AND_DOGS_FOLDER)
    archive = _download(home)
    try:
        _unpack(archive, home, target)
    finally:
        os.unlink(archive)
    return _bunch(target)


_HOW_TO_PROVIDE = (
    "Either point data_home (or the environment variable SKLEARN_CONVFEAT_DATA) at a "
    f"folder holding an unpacked copy of {CATS_AND_DOGS_URL} ({CATS_AND_DOGS_FOLDER}/"
    "train and validation), or call fetch_cats_and_dogs() with "
    "download_if_missing=True on a machine with internet access."
)


def _data_home(data_home):
    if data_home is None:
        data_home = os.environ.get(DATA_ENV_VAR)
    if data_home is None:
        from sklearn.datasets import get_data_home

        data_home = get_data_home()
    return os.path.abspath(os.path.expanduser(os.fspath(data_home)))


def _is_unpacked(folder):
    return all(
        os.path.isdir(os.path.join(folder, split, label))
        for split, label in CATS_AND_DOGS_COUNTS
    )


def _bunch(folder):
    return Bunch(
        path=folder,
        train=os.path.join(folder, "train"),
        validation=os.path.join(folder, "validation"),
        class_names=sorted({label for _, label in CATS_AND_DOGS_COUNTS}),
        DESCR=_DESCR,
    )


def _download(home):
    """The archive, checked, as a temporary file in ``home``; nothing left on failure."""
    handle, partial = tempfile.mkstemp(prefix=".cats_and_dogs-", suffix=".zip", dir=home)
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(handle, "wb") as file:
            try:
                with urllib.request.urlopen(
                    CATS_AND_DOGS_URL, timeout=TIMEOUT_SECONDS
                ) as response:
                    while chunk := response.read(1 << 20):
                        file.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise OSError(
                    f"Could not download {CATS_AND_DOGS_URL} ({received} bytes "
                    f"received): {exc!r}. Nothing was kept. " + _HOW_TO_PROVIDE
                ) from exc
        if received != CATS_AND_DOGS_SIZE:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} is incomplete or not the "
                f"expected archive: {received} bytes instead of {CATS_AND_DOGS_SIZE}. "
                "Nothing was kept; try again. " + _HOW_TO_PROVIDE
            )
        if CATS_AND_DOGS_SHA256 is not None and digest.hexdigest() != CATS_AND_DOGS_SHA256:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} is corrupt: sha256 "
                f"{digest.hexdigest()} instead of {CATS_AND_DOGS_SHA256}. Nothing was "
                "kept; try again. " + _HOW_TO_PROVIDE
            )
    except BaseException:
        os.unlink(partial)
        raise
    return partial


def _unpack(archive, home, target):
    """Check ``archive``'s content and unpack it to ``target`` atomically."""
    staging = tempfile.mkdtemp(prefix=".cats_and_dogs-", dir=home)
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                broken = zipped.testzip()
                members = zipped.infolist()
                if broken is None:
                    _check_members(members)
                    zipped.extractall(staging)  # drops absolute paths and '..'
        except zipfile.BadZipFile as exc:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} is not a valid zip archive "
                f"({exc}). Nothing was kept; try again."
            ) from exc
        if broken is not None:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} is corrupt: {broken!r} fails "
                "its CRC check. Nothing was kept; try again."
            )
        unpacked = os.path.join(staging, CATS_AND_DOGS_FOLDER)
        try:
            os.replace(unpacked, target)
        except OSError:
            if not _is_unpacked(target):  # else another process got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(members):
    if sum(member.file_size for member in members) > _MAX_UNPACKED_BYTES:
        raise OSError(
            f"The download of {CATS_AND_DOGS_URL} would unpack to more than "
            f"{_MAX_UNPACKED_BYTES} bytes: it is not the expected archive."
        )
    counts = dict.fromkeys(CATS_AND_DOGS_COUNTS, 0)
    for member in members:
        parts = member.filename.split("/")
        key = tuple(parts[1:3])
        if (
            len(parts) == 4 and parts[0] == CATS_AND_DOGS_FOLDER and key in counts
            and parts[3].lower().endswith((".jpg", ".jpeg"))
        ):
            counts[key] += 1
    if counts != CATS_AND_DOGS_COUNTS:
        raise OSError(
            f"The download of {CATS_AND_DOGS_URL} does not hold the expected images: "
            f"{counts} instead of {CATS_AND_DOGS_COUNTS} (split, class) counts. "
            "Nothing was kept."
        )
