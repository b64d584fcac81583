"""An image scraper for sphinx-gallery: figures that pyplot does not manage.

:func:`sklearn_convfeat.plot_cam` returns a ``matplotlib.figure.Figure`` built without
pyplot (so that it is freed like any object), which sphinx-gallery's matplotlib
scraper cannot see. This one saves every such figure an example block leaves in its
globals, once.
"""

from sphinx_gallery.scrapers import figure_rst

_SCRAPED = "_sphinx_gallery_scraped"


def unmanaged_figures(block, block_vars, gallery_conf):
    from matplotlib.figure import Figure

    paths = []
    for value in list(block_vars["example_globals"].values()):
        if not isinstance(value, Figure) or getattr(value, _SCRAPED, False):
            continue
        setattr(value, _SCRAPED, True)
        if value.canvas.manager is not None:
            continue  # pyplot's: the matplotlib scraper, which runs next, saves it
        path = next(block_vars["image_path_iterator"])
        value.savefig(path)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
