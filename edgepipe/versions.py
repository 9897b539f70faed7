"""Versions of Python and of the packages every run records (core packages and the backends' engines)."""

from __future__ import annotations

import platform
from importlib import metadata

__version__ = "0.2.0"

CORE_PACKAGES = ("edgepipe", "numpy", "scikit-learn", "pillow")


def library_versions() -> dict[str, str]:
    from edgepipe.backends import tracked_packages

    versions = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *tracked_packages()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
