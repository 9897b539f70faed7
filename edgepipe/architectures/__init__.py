"""Registry of buildable networks.

Each entry is an :class:`Architecture`: it knows its family, paper, accepted
input sizes, width multipliers, where ImageNet weights exist, and the
ImageNet reference figures published for it. ``build_classifier`` turns an
entry into the model edgepipe trains and exports::

    input (raw pixels 0..255) -> preprocess -> backbone -> pool -> dropout -> classifier

so every exported artifact takes raw pixels.
"""

from __future__ import annotations

# Each module registers its entries; Keras Applications first, then the networks built from papers.
from edgepipe.architectures import (  # noqa: F401
    alexnet,
    densenet_paper,
    efficientnet_lite,
    googlenet,
    keras_apps,  # noqa: F401, I001
    lenet,
    resnet_paper,
    vgg,
)
from edgepipe.architectures.base import (
    ARCHITECTURES,
    Architecture,
    Preprocessing,
    Reference,
    get_architecture,
    register_architecture,
)
from edgepipe.architectures.classifier import build_classifier, check_weights_request, resolve_architecture

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Preprocessing",
    "Reference",
    "build_classifier",
    "check_weights_request",
    "resolve_architecture",
    "get_architecture",
    "register_architecture",
]
