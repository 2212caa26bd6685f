"""Sphinx configuration of the skhypernet documentation."""

import skhypernet

project = "skhypernet"
author = "The skhypernet developers"
release = version = skhypernet.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "results", "auto_examples/*.ipynb", "auto_examples/*.py"]
autosummary_generate = True
# Members inherited from scikit-learn are documented there; theirs refer to
# labels of scikit-learn's own documentation.
autodoc_default_options = {
    "members": True,
    "inherited-members": "BaseEstimator,RegressorMixin,ClassifierMixin,_MetadataRequester",
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
myst_heading_anchors = 3
# Docstrings inherited from scikit-learn (score, set_*_request) refer to labels
# and glossary terms of scikit-learn's documentation; ours use neither.
suppress_warnings = ["ref.ref", "ref.term"]
html_theme = "alabaster"
html_static_path = []

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
}
