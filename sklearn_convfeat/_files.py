"""Writing files and folders atomically: readers see all of a file or none of it.

Everything this package writes for later reads (feature-cache entries, exported
models, uploaded weights) goes through here. A file is written under a hidden name
unique to this process and call, in the destination folder, then renamed into place
(``os.replace``: atomic on POSIX and Windows). Killed writers leave only hidden
``*.tmp`` names, which :func:`remove_stale_temporaries` clears.

File modes: temporaries are created with ``open(..., "x")``, so they get the usual
mode under the process' umask (typically 0644), never ``mkstemp``'s private 0600:
caches in a shared folder stay readable by the other users of that folder.
"""

import contextlib
import glob
import os
import shutil
import time
import uuid


def temporary_name(path):
    """A hidden name beside ``path``, unique to this process and call."""
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def write_atomic(path, write, *, durable=False):
    """Create or replace the file ``path`` with what ``write(file)`` writes.

    ``write`` gets a binary file object. With ``durable=True`` the data is flushed
    to disk before the rename (for large files that are costly to rebuild).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = temporary_name(path)
    try:
        with open(temporary, "xb") as file:
            write(file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise


def write_folder_atomic(path, fill):
    """Create the folder ``path`` filled by ``fill(temporary_folder)``, atomically.

    If another process created ``path`` first, its folder is kept and ours dropped:
    both hold the same content by construction (the name is a content key).
    """
    path = os.fspath(path)
    temporary = temporary_name(path)
    os.mkdir(temporary)
    try:
        fill(temporary)
        try:
            os.rename(temporary, path)  # atomic; fails if the folder exists already
        except OSError:
            if not os.path.isdir(path):
                raise
            shutil.rmtree(temporary, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def remove(path):
    """Remove a file or a folder tree; nothing if it is absent."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_stale_temporaries(path, age=3600):
    """Remove what killed writers of ``path`` left behind (over ``age`` seconds old)."""
    folder, name = os.path.split(os.fspath(path))
    pattern = os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")
    for leftover in glob.glob(pattern):
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(leftover) > age:
                remove(leftover)
