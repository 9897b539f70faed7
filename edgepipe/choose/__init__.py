"""Choosing a network for a device: what each architecture, width, input size and format costs there, and which
one is the most accurate on the user's data within their budgets.

``measure`` times one network's artifacts on a target (this machine or one reached over SSH) and caches the
figures per device and engine versions; ``catalogue`` turns them into the measured architecture table of
``edgepipe models --measure``; ``candidates``, ``budgets``, ``loop``, ``records``, ``answer`` and ``plot`` make
``edgepipe search``.
"""
