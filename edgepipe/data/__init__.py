"""Datasets: data sources (image folders, built-in sets, TFDS) behind one registry, splits and decoding."""

from edgepipe.data import builtin, folders, tfds_source  # noqa: E402,F401,I001  (each registers its source)
from edgepipe.data.dataset import Dataset, Split, format_summary, make_index, materialize
from edgepipe.data.sources import SOURCES, check_path, source_for

__all__ = ["Dataset", "SOURCES", "Split", "check_path", "format_summary", "make_index", "materialize", "source_for"]
