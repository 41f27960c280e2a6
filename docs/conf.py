"""Sphinx configuration of scbignn-tools."""

from __future__ import annotations

import os
from datetime import date
from importlib.metadata import version as _version

project = "scbignn-tools"
author = "scbignn-tools developers"
copyright = f"{date.today().year}, {author}"
release = _version("scbignn-tools")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autosummary_generate = True
templates_path = ["_templates"]
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
nb_execution_mode = "off"  # notebooks are stored with their outputs
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
html_theme = "sphinx_book_theme"
html_title = "scbignn-tools"
# Links to other projects' docs need their inventories. Offline (CI here has no network),
# intersphinx is dropped and references into those projects render as plain names; every
# reference into this package must still resolve (``make docs`` runs with ``-W -n``).
_INVENTORIES = {
    "anndata": "https://anndata.readthedocs.io/en/stable/",
    "mudata": "https://mudata.readthedocs.io/en/latest/",
    "numpy": "https://numpy.org/doc/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
    "python": "https://docs.python.org/3/",
    "scanpy": "https://scanpy.readthedocs.io/en/stable/",
    "scvi": "https://docs.scvi-tools.org/en/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
}


def _reachable(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "objects.inv", timeout=5):
            return True
    except OSError:
        return False


_online = os.environ.get("SCBIGNN_DOCS_OFFLINE") != "1" and _reachable(_INVENTORIES["python"])
intersphinx_mapping = {k: (v, None) for k, v in _INVENTORIES.items()} if _online else {}
nitpicky = True
nitpick_ignore = [
    ("py:class", "DataFormat"),  # a Literal alias, spelled out in the parameters' text
    ("py:class", "Record"),  # a Callable alias of train._plans, spelled out in its docstring
    ("py:class", "np.ndarray"),
]
nitpick_ignore_regex = [
    # the model's mixins are private; their methods are documented on the model
    ("py:class", r"scbignn_tools\.model\._\w+\.\w+Mixin"),
    # the plans' private base class; its hooks are documented on the plans
    ("py:class", r"scbignn_tools\.train\._plans\._PhasePlan"),
]
if not _online:
    _external = r"(anndata|mudata|numpy|pandas|scanpy|scipy|sparse|scvi|torch|matplotlib|os|pathlib|collections|typing|lightning|torchmetrics)"
    nitpick_ignore_regex += [
        (r"py:.*", _external + r"(\..*)?"),
        (r"py:.*", r"(AnnData|MuData|DataFrame|Series|ndarray|Tensor|Axes|Figure)"),
    ]
