"""What a search compares: architectures x widths x input sizes, each with its initial weights, and the formats.

A width or input size an architecture does not have, or weights that are not on this machine, make a candidate
that is skipped with its reason (random weights stand in for missing ImageNet weights only when the user allows
them, and the candidate says so); the whole search fails only on input that is wrong for every candidate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from edgepipe.choose.measure import Echo, Network
from edgepipe.errors import EdgepipeError

#: weights for every architecture ("imagenet", "none" or a file), or one per architecture ({arch: value})
WeightsSpec = Union[str, Mapping[str, str]]


@dataclass(frozen=True)
class Candidate:
    """One network with its initial weights; ``reason`` says why it is skipped (None: it takes part)."""

    arch: str
    alpha: float | None
    input_size: int
    weights: str
    reason: str | None = None
    #: what the weights are when they are not what was asked for (random in place of missing ImageNet weights)
    weights_note: str | None = None

    @property
    def id(self) -> str:
        """A stable name for records and folders: arch, width, size and weights."""
        width = f"-a{self.alpha:g}" if self.alpha is not None else ""
        weights = self.weights if self.weights in ("imagenet", "none") else "file-" + Path(self.weights).stem
        return f"{self.arch}{width}-{self.input_size}px-{weights}"

    @property
    def label(self) -> str:
        width = f" alpha {self.alpha:g}" if self.alpha is not None else ""
        return f"{self.arch}{width} {self.input_size}px"

    def network(self, channels: int, classes: int) -> Network:
        return Network(self.arch, self.alpha, self.input_size, channels, classes)


def weights_for(spec: WeightsSpec, arch: str) -> str:
    """The weights an architecture starts from: its own entry of a mapping (default imagenet), or ``spec``."""
    if isinstance(spec, Mapping):
        from edgepipe.architectures.base import ARCHITECTURES

        own = {ARCHITECTURES.canonical(name): value for name, value in spec.items()}
        return own.get(arch, "imagenet")
    return spec


def check_weights_spec(spec: WeightsSpec, archs: Sequence[str]) -> None:
    """A weights file fits one architecture: refuse one file for several (name it per architecture instead)."""
    if isinstance(spec, Mapping):
        for name in spec:
            from edgepipe.architectures.base import ARCHITECTURES

            ARCHITECTURES.canonical(name)  # an unknown name is an error with the closest one
        return
    if spec not in ("imagenet", "none") and len(archs) > 1:
        raise EdgepipeError(
            f"one weights file ({spec}) for {len(archs)} architectures",
            "Name a file per architecture: --weights ARCH=FILE[,ARCH=FILE] (others: imagenet).",
        )


def enumerate_candidates(
    archs: Sequence[str],
    alphas: Sequence[float] | None,
    sizes: Sequence[int] | None,
    weights: WeightsSpec,
    channels: int,
    allow_random: bool,
    echo: Echo,
) -> list[Candidate]:
    """Every architecture x width x input size, in that order, with its weights or the reason it is skipped.

    An architecture without a width multiplier is one candidate per size (``alphas`` do not apply to it); no
    ``alphas`` means each architecture's default width, no ``sizes`` its default input size.
    """
    from edgepipe.architectures import get_architecture

    out: list[Candidate] = []
    for name in archs:
        arch = get_architecture(name)
        widths = [None] if not arch.has_alpha else list(alphas or [arch.default_alpha])
        for alpha in widths:
            for size in sizes or [arch.default_input_size]:
                out.append(_candidate(arch, alpha, int(size), weights_for(weights, arch.name), channels, allow_random))
                if out[-1].reason:
                    echo(f"  {out[-1].label}: skipped ({out[-1].reason})")
    return out


def _candidate(arch, alpha: float | None, size: int, weights: str, channels: int, allow_random: bool) -> Candidate:
    from edgepipe.architectures.classifier import resolve_alpha
    from edgepipe.architectures.offline import missing_imagenet_weights

    def skipped(reason: str) -> Candidate:
        return Candidate(arch.name, alpha, size, weights, reason)

    try:
        resolve_alpha(arch, alpha)
    except EdgepipeError as exc:
        return skipped(str(exc))
    if size < arch.min_input_size:
        return skipped(f"input size {size} is below {arch.name}'s smallest, {arch.min_input_size}")
    if weights == "none":
        return (
            Candidate(arch.name, alpha, size, weights)
            if allow_random
            else skipped(
                "random weights (--weights none) need --allow-random-weights: a frozen random backbone learns little"
            )
        )
    if weights != "imagenet":
        if not Path(weights).is_file():
            return skipped(f"weights file {weights} does not exist")
        return Candidate(arch.name, alpha, size, os.path.abspath(weights))
    missing = missing_imagenet_weights(arch, size, channels, alpha)
    if missing is None:
        return Candidate(arch.name, alpha, size, weights)
    if allow_random:
        return Candidate(arch.name, alpha, size, "none", weights_note=f"random in place of ImageNet: {missing}")
    return skipped(missing + "; --allow-random-weights uses random ones instead")


def parse_weights(value: str | None) -> WeightsSpec:
    """The command line's --weights: imagenet, none, FILE, or ARCH=FILE[,ARCH=FILE] (the others: imagenet)."""
    if value is None:
        return "imagenet"
    if "=" not in value:
        return value
    pairs: dict[str, str] = {}
    for item in value.split(","):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise EdgepipeError(
                f"--weights: '{item}' is not ARCH=FILE", "e.g. --weights mobilenet_v2=mnv2.h5,lenet5=none"
            )
        pairs[name.strip()] = path.strip()
    return pairs


def describe_weights(candidate: Candidate) -> str:
    return candidate.weights_note or candidate.weights


def as_dict(candidate: Candidate) -> dict[str, Any]:
    return {
        "id": candidate.id,
        "arch": candidate.arch,
        "alpha": candidate.alpha,
        "input_size": candidate.input_size,
        "weights": candidate.weights,
        "weights_note": candidate.weights_note,
        "reason": candidate.reason,
    }
