"""Datasets: image folders, built-in sets, splits and decoding."""

from edgepipe.data.dataset import Dataset, Split, format_summary, make_index, materialize

__all__ = ["Dataset", "Split", "format_summary", "make_index", "materialize"]
