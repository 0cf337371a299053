"""Quality pseudo-labels: the label methods (one registration each) and the labels table.

``METHODS`` (``fiqa.label.registry``) holds every method; the built-ins register in
``fiqa.label.methods`` on import. ``fiqa.label.table`` builds a prepared set's labels table.
"""

from fiqa.label import methods as _builtin_methods  # noqa: F401  (registers the built-ins)
from fiqa.label.context import LabelContext
from fiqa.label.registry import METHODS, LabelMethod, blind_methods, get_method

__all__ = ["METHODS", "LabelContext", "LabelMethod", "blind_methods", "get_method"]
