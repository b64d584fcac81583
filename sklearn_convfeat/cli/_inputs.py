"""The image inputs of ``convfeat`` commands: folders, class folders, list files."""

import os

from .. import IMAGE_EXTENSIONS, load_image_folder
from ._options import (
    SAVE_FORMATS,
    CommandError,
    check_output,
    check_weights,
    import_tensorflow_quietly,
)


def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _holds_images(folder):
    return any(_is_image(name) for _, _, files in os.walk(folder) for name in files)


def list_images(source):
    """``(paths, labels or None)`` of a class-per-folder directory, a folder, a list."""
    import numpy as np

    if os.path.isdir(source):
        entries = sorted(os.scandir(source), key=lambda entry: entry.name)
        files = [e.path for e in entries if e.is_file() and _is_image(e.name)]
        classes = [e.name for e in entries if e.is_dir() and _holds_images(e.path)]
        if files and classes:
            raise CommandError(
                f"INPUT {source!r} holds both image files and sub-folders of images "
                f"({', '.join(classes[:3])}): keep one layout (one sub-folder per class, "
                "or the images themselves), or list the files in a text file."
            )
        if len(classes) == 1:  # extraction needs no second class
            folder = os.path.join(source, classes[0])
            paths = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(folder)
                for name in names
                if _is_image(name)
            )
            return np.asarray(paths, dtype=object), np.full(len(paths), classes[0], object)
        if classes:
            paths, y, class_names = load_image_folder(source)
            return paths, np.asarray(class_names, dtype=object)[y]
        if not files:
            raise CommandError(
                f"INPUT {source!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."
            )
        return np.asarray(files, dtype=object), None
    if os.path.isfile(source):
        if _is_image(source):
            return np.asarray([source], dtype=object), None
        return _read_list(source), None
    raise CommandError(
        f"INPUT {source!r} does not exist. Give a class-per-folder directory, a folder "
        "of images, or a text file listing image paths (one per line)."
    )


def _read_list(list_file):
    import numpy as np

    try:
        with open(list_file, encoding="utf-8") as lines:
            entries = [line.strip() for line in lines]
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"INPUT {list_file!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) "
            "nor a UTF-8 text file listing image paths."
        ) from exc
    folder = os.path.dirname(os.path.abspath(list_file))
    paths = [
        os.path.join(folder, entry)  # an absolute entry stays as it is
        for entry in entries
        if entry and not entry.startswith("#")
    ]
    if not paths:
        raise CommandError(
            f"INPUT {list_file!r} lists no image paths: write one path per line."
        )
    return np.asarray(paths, dtype=object)


def _class_folders(data_dir):
    """The train/ (required), validation/ and test/ folders of DATA_DIR."""
    if not os.path.isdir(data_dir):
        raise CommandError(f"DATA_DIR {data_dir!r} is not a folder.")
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(
            f"DATA_DIR must hold a train/ folder (and optionally validation/ and test/), "
            f"each with one sub-folder per class. {train_dir!r} is not a folder."
        )
    return {
        split: os.path.join(data_dir, split)
        for split in ("train", "validation", "test")
        if os.path.isdir(os.path.join(data_dir, split))
    }


def load_splits(data_dir):
    """``{split: (paths, labels)}`` with class-name labels; classes must match."""
    import numpy as np

    splits = {}
    train_classes = None
    for split, folder in _class_folders(data_dir).items():
        paths, y, class_names = load_image_folder(folder)
        if train_classes is None:
            train_classes = class_names
        elif class_names != train_classes:
            raise ValueError(
                f"{split}/ has classes {class_names}, train/ has {train_classes}: "
                "the class sub-folders must match."
            )
        splits[split] = (paths, np.asarray(class_names, dtype=object)[y])
    return splits


def training_inputs(args, say):
    """What a command that trains checks first: ``--save``, ``--weights``, DATA_DIR.

    Returns ``(weights, train paths, train labels, other splits)``.
    """
    if args.save:
        check_output(args.save, "--save", SAVE_FORMATS)
    weights = check_weights(args.weights)
    data_dir = args.data_dir
    if data_dir is None:
        from ..datasets import fetch_cats_and_dogs

        data_dir = fetch_cats_and_dogs().path
        say(f"DATA_DIR: {data_dir}")
    splits = load_splits(data_dir)
    paths, labels = splits.pop("train")
    say(f"train: {len(paths)} images, classes {sorted(set(labels))}")
    import_tensorflow_quietly()
    return weights, paths, labels, splits
