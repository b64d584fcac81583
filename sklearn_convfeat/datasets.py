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
    published; set ``sklearn_convfeat.datasets.CATS_AND_DOGS_SHA256`` to check one. An
    archive with a member outside its folder (an absolute path or a ``..`` component)
    is refused whole.

    What is already there is checked before anything is downloaded, and what is
    returned always holds images:

    - ``<data_home>/cats_and_dogs_filtered`` is where downloads go, and it must hold
      the complete data (the exact counts above). A folder there that does not (an
      interrupted manual unzip, files deleted since) is never overwritten nor
      deleted: this function only ever creates that folder complete, in one rename,
      so a partial one is not its own. The error names the folder and what is
      missing; delete or move it and call again.
    - ``data_home`` itself may be a copy you made (any subset of the photos), taken
      as it is; each of its four class folders must hold at least one JPEG.

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
        corrupt. The message names the two ways to provide the data. Also
        (``NotADirectoryError``) when ``data_home`` is a file, and when the copy found
        is incomplete (see above).

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
    ...     path = home / name
    ...     path.parent.mkdir(parents=True, exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(path)
    >>> data = fetch_cats_and_dogs(data_home=home, download_if_missing=False)
    >>> paths, y, class_names = load_image_folder(data.train)
    >>> class_names, len(paths)
    (['cats', 'dogs'], 2)
    """
    home = _data_home(data_home)
    if os.path.exists(home) and not os.path.isdir(home):
        raise NotADirectoryError(
            f"`data_home` must be a folder (or None). Got {home!r}, which is a file. "
            "Point data_home (or SKLEARN_CONVFEAT_DATA) at a folder, or move the file "
            "away."
        )
    target = os.path.join(home, CATS_AND_DOGS_FOLDER)
    if _has_class_folders(home) and not os.path.lexists(target):
        _check_copy(home, exact=False)  # the user's own copy, as they made it
        return _bunch(home)
    if os.path.lexists(target):
        _check_copy(target, exact=True)
        return _bunch(target)
    if not download_if_missing:
        raise OSError(
            f"The cats-vs-dogs data is not in {home!r} (no {CATS_AND_DOGS_FOLDER}/"
            f"train and validation folders there) and download_if_missing=False. "
            + _HOW_TO_PROVIDE
        )
    os.makedirs(home, exist_ok=True)
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


def _has_class_folders(folder):
    return all(
        os.path.isdir(os.path.join(folder, split, label))
        for split, label in CATS_AND_DOGS_COUNTS
    )


def _is_image(name):
    return name.lower().endswith((".jpg", ".jpeg"))


def _copy_problems(folder, *, exact):
    """What is wrong with the unpacked copy ``folder`` (a list of phrases; empty: fine).

    ``exact``: each class folder must hold exactly ``CATS_AND_DOGS_COUNTS`` JPEGs, else
    at least one.
    """
    if not os.path.isdir(folder):
        return ["it is not a folder"]
    problems = []
    for (split, label), expected in CATS_AND_DOGS_COUNTS.items():
        classes = os.path.join(folder, split, label)
        if not os.path.isdir(classes):
            problems.append(f"{split}/{label} is missing")
            continue
        found = sum(
            _is_image(entry.name) and entry.is_file() for entry in os.scandir(classes)
        )
        if (found != expected) if exact else (found == 0):
            problems.append(f"{split}/{label} holds {found} of {expected} images")
    return problems


def _check_copy(folder, *, exact):
    problems = _copy_problems(folder, exact=exact)
    if not problems:
        return
    if exact:
        raise OSError(
            f"The cats-vs-dogs folder {folder!r} is incomplete: {'; '.join(problems)}. "
            "fetch_cats_and_dogs only ever creates it complete, so it was left as it "
            "is (not overwritten, nothing downloaded). Delete or move that folder and "
            "call again to download a fresh copy, or complete it from "
            f"{CATS_AND_DOGS_URL}."
        )
    raise OSError(
        f"The cats-vs-dogs copy in data_home={folder!r} has no images where they are "
        f"expected: {'; '.join(problems)}. Put the JPEGs in <data_home>/train/cats, "
        "train/dogs, validation/cats and validation/dogs, or point data_home at "
        "another folder."
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
                    zipped.extractall(staging)
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
        problems = _copy_problems(unpacked, exact=True)  # e.g. duplicate member names
        if problems:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} does not unpack to the expected "
                f"images: {'; '.join(problems)}. Nothing was kept."
            )
        try:
            os.rename(unpacked, target)  # fails if the target holds anything
        except OSError:
            # Another process got there first (its copy is checked), or a folder that
            # appeared meanwhile (refused, named, kept).
            _check_copy(target, exact=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(members):
    if sum(member.file_size for member in members) > _MAX_UNPACKED_BYTES:
        raise OSError(
            f"The download of {CATS_AND_DOGS_URL} would unpack to more than "
            f"{_MAX_UNPACKED_BYTES} bytes: it is not the expected archive."
        )
    for member in members:
        # zipfile would quietly rewrite these names inside the folder, past the counts.
        parts = member.filename.replace("\\", "/").split("/")
        if member.filename.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
            raise OSError(
                f"The download of {CATS_AND_DOGS_URL} holds the member "
                f"{member.filename!r}, which points outside its folder (an absolute "
                "path or a '..' component): it is not the expected archive and was "
                "refused whole. Nothing was kept."
            )
    counts = dict.fromkeys(CATS_AND_DOGS_COUNTS, 0)
    for member in members:
        parts = member.filename.split("/")
        key = tuple(parts[1:3])
        if (
            len(parts) == 4 and parts[0] == CATS_AND_DOGS_FOLDER and key in counts
            and _is_image(parts[3])
        ):
            counts[key] += 1
    if counts != CATS_AND_DOGS_COUNTS:
        raise OSError(
            f"The download of {CATS_AND_DOGS_URL} does not hold the expected images: "
            f"{counts} instead of {CATS_AND_DOGS_COUNTS} (split, class) counts. "
            "Nothing was kept."
        )
