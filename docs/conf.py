"""Sphinx configuration of the sklearn-convfeat documentation site.

Build it (offline; warnings are errors; runs the example gallery, about a minute on
2 CPU cores without the real weights and data):

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery examples use the real VGG16 weights and images when the environment
variables SKLEARN_CONVFEAT_WEIGHTS (weights file) and SKLEARN_CONVFEAT_DATA (a
class-per-folder dataset with train/validation/test) are set, and random weights
on generated images otherwise.
"""

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

# Before TensorFlow is imported by autodoc or the examples.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import sklearn_convfeat

project = "sklearn-convfeat"
author = "sklearn-convfeat developers"
copyright = "sklearn-convfeat developers"
release = sklearn_convfeat.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "benchmark_tables",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_ext", "_templates"]


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:  # sklearn_convfeat.dask without Dask installed
        return False
    return True


# Pages that may be missing (a guide not written yet, a module whose optional
# dependency is not installed): the site still builds without them, and their toctree
# entries and links are left out (_leave_out_missing_pages below).
OPTIONAL_PAGES = {
    "scale_out": (DOCS / "scale_out.md").is_file(),
    "api_dask": _importable("sklearn_convfeat.dask"),
    # The keras-hub example needs the hub extra (keras-hub, Python >= 3.11); without
    # it the gallery leaves the example out (sphinx_gallery_conf's ignore_pattern).
    "auto_examples/plot_hub_preset": importlib.util.find_spec("keras_hub") is not None,
}
exclude_patterns += [
    f"{page}.*" for page, present in OPTIONAL_PAGES.items() if not present
]

# -- API reference ---------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's page lists its __all__
autodoc_default_options = {"member-order": "bysource"}
# numpydoc's own member tables would point at pages autosummary does not generate.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# numpydoc's docstring checks, as warnings (errors under -W), except those the house
# style departs from: named return values that need no more words (RT02, RT03),
# parameters shared with another function documented together as "As for cam" (PR03,
# PR04), summaries such as "Names of the output features." (SS05), and extended
# summaries, See Also and Examples sections that are optional (ES01, SA01, EX01:
# methods share their class's Examples).
numpydoc_validation_checks = {
    "all",
    "ES01",
    "EX01",
    "PR03",
    "PR04",
    "RT02",
    "RT03",
    "SA01",
    "SS05",
}

# -- Markdown --------------------------------------------------------------------------
# Headings get GitHub's anchors, so "[text](user_guide.md#some-heading)" works both on
# GitHub and here.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# -- Example gallery -------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("sklearn_convfeat",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 5,
    # plot_cam returns a Figure that pyplot does not manage: scrape those too, before
    # the matplotlib scraper closes (and so unregisters) pyplot's own.
    "image_scrapers": ("gallery_scrapers.unmanaged_figures", "matplotlib"),
    "matplotlib_animations": False,
    "capture_repr": (),  # print() what a reader should see, not reprs of titles
    "within_subsection_order": "FileNameSortKey",
    "ignore_pattern": r"__init__\.py"
    + ("" if OPTIONAL_PAGES["auto_examples/plot_hub_preset"] else r"|plot_hub_preset\.py"),
}

# -- HTML ------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-convfeat {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_static_path = []
html_show_sourcelink = False
html_copy_source = False

benchmark_results_dir = str(REPO / "benchmarks" / "results")


def _leave_out_missing_pages(app, docname, source):
    """Drop toctree entries and Markdown links that name a page not written yet."""
    for page, present in OPTIONAL_PAGES.items():
        if present:
            continue
        text = re.sub(rf"(?m)^\s*{page}\s*$\n?", "", source[0])
        source[0] = re.sub(rf"\[([^\]]*)\]\({page}\.(?:md|rst)[^)]*\)", r"\1", text)


# numpydoc sections whose unindented lines are "name : type" or a return type alone.
_TYPED_SECTIONS = {
    "Parameters",
    "Other Parameters",
    "Attributes",
    "Returns",
    "Yields",
    "Receives",
}
# An attribute name such as n_features_out_, which reST would read as a link target.
_ATTRIBUTE_NAME = re.compile(r"\b([A-Za-z][\w.]*[A-Za-z0-9])_(?=[\s,)\]}]|$)")


def _escape_attribute_names(app, what, name, obj, options, lines):
    """``ndarray of shape (n_images, n_features_out_)`` is a type, not a reST link."""
    section, indent = None, None
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if following.strip() and set(following.strip()) == {"-"}:
            section, indent = line.strip(), len(line) - len(line.lstrip())
            continue
        if section not in _TYPED_SECTIONS or not line.strip():
            continue
        if len(line) - len(line.lstrip()) == indent:
            head, colon, kind = line.rpartition(" : ")
            escaped = _ATTRIBUTE_NAME.sub(r"\1\\_", kind)
            lines[index] = head + colon + escaped


def setup(app):
    app.connect("source-read", _leave_out_missing_pages)
    # Before numpydoc (priority 500) turns the sections into reST.
    app.connect("autodoc-process-docstring", _escape_attribute_names, priority=400)
