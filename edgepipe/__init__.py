"""edgepipe: from a CNN architecture and labelled images to deployable, measured edge models."""

__version__ = "0.1.0"
