"""edgepipe's version, and the core packages every run records the versions of (with the backends' engines:
``device.library_versions``)."""

from __future__ import annotations

__version__ = "0.2.0"

CORE_PACKAGES = ("edgepipe", "numpy", "scikit-learn", "pillow")
