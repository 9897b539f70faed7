"""edgepipe: from a CNN architecture and labelled images to deployable, measured edge models.

The Python API (see ``edgepipe.api``)::

    import edgepipe

    run = edgepipe.run(data="my_photos", arch="mobilenet_v2", weights="imagenet")
    exported = edgepipe.export("model.keras", ["tflite-int8", "onnx-fp32"], calibration="my_photos")
    results = edgepipe.bench([exported.path("tflite-int8")], data="my_photos", threads=[1, 2])
    gate = edgepipe.compare("results.json", "baseline.json", max_latency_regression=0.10)
    costs = edgepipe.measure_models(["mobilenet_v2", "efficientnet_lite0"], threads=2)  # latency on this device
    best = edgepipe.search("my_photos", max_latency_ms=3, threads=2)  # the most accurate network within 3 ms
"""

from edgepipe.versions import __version__

_API = ("run", "export", "bench", "profile", "compare", "merge", "verify", "measure_models", "search")


def __getattr__(name: str):
    # imported on first use, so 'import edgepipe' and 'edgepipe --help' stay fast
    if name in _API:
        from edgepipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgepipe' has no attribute {name!r}")


__all__ = ["__version__", *_API]
