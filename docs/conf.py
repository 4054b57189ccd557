# Sphinx configuration of the pyg-gat-ext documentation. CI builds it with
# warnings as errors: python -m sphinx -W -b html docs docs/_build/html
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import pyg_gat_ext  # noqa: E402

project = 'pyg-gat-ext'
author = 'pyg-gat-ext developers'
release = pyg_gat_ext.__version__
extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
]
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'
napoleon_custom_sections = [('Shapes', 'params_style')]
exclude_patterns = ['_build']
html_theme = 'alabaster'
