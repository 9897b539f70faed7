"""Choosing a network for a device: what each architecture, width, input size and format costs there, and which
one is the most accurate on the user's data within their budgets.

``measure`` times one network's artifacts on a target (this machine or one reached over SSH) and caches the
figures per device and engine versions; ``catalogue`` turns them into the measured architecture table of
``edgepipe models --measure``; ``candidates``, ``budgets``, ``loop``, ``records``, ``answer`` and ``plot`` make
``edgepipe search``.

The package is also callable: ``edgepipe.search(...)`` is ``edgepipe.api.search(...)``. Python binds a
subpackage to its parent's attribute of the same name once it is imported, so the API function and this
package share the name ``edgepipe.search``; calling the package runs the function.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """``edgepipe.api.search``: see its documentation."""
        from edgepipe.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
