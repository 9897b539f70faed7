# edgepipe images, one target per device family (docs/containers.md):
#   docker build --target cpu    -t edgepipe:cpu .
#   docker build --target gpu    -t edgepipe:gpu .      # NVIDIA GPU workstation or server (run with --gpus all)
#   docker build --target jetson -t edgepipe:jetson .   # on a Jetson (JetPack 6), run with --runtime nvidia
# Each image installs edgepipe as the README does, runs as the non-root user "edgepipe" (uid 1000),
# works in /work, and has edgepipe as its entry point.

ARG PYTHON_VERSION=3.11
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ARG JETPACK_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0

# ---------------------------------------------------------------------------- cpu
FROM python:${PYTHON_VERSION}-slim AS cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /opt/edgepipe
RUN python3 -m venv /opt/venv
# dependencies first, from the project metadata alone, so code changes do not rebuild this layer
COPY pyproject.toml README.md ./
COPY edgepipe/__init__.py edgepipe/__init__.py
RUN pip install . && pip uninstall -y edgepipe
COPY edgepipe edgepipe
RUN pip install --no-deps . \
    && useradd --create-home --uid 1000 edgepipe
USER 1000
WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]

# ---------------------------------------------------------------------------- gpu
# CUDA and cuDNN from NVIDIA's base image; TensorRT, cuda-python and onnxruntime-gpu from the gpu extra.
FROM ${CUDA_IMAGE} AS gpu
ARG PYTHON_VERSION
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# apt packages follow the base image's release; Python packages are pinned by pyproject.toml's ranges
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv
WORKDIR /opt/edgepipe
COPY pyproject.toml README.md ./
COPY edgepipe/__init__.py edgepipe/__init__.py
# onnxruntime-gpu and the CPU onnxruntime share one module: remove both, then install the GPU build alone
# hadolint ignore=DL3013
RUN pip install ".[gpu]" \
    && pip uninstall -y edgepipe onnxruntime onnxruntime-gpu \
    && pip install "onnxruntime-gpu>=1.18,<2"
COPY edgepipe edgepipe
RUN pip install --no-deps . \
    && useradd --create-home --uid 1000 edgepipe
USER 1000
WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]

# ---------------------------------------------------------------------------- jetson
# JetPack supplies CUDA, cuDNN and TensorRT (Python bindings for its system Python 3.10); the venv sees
# them through --system-site-packages. onnxruntime here is the CPU build from PyPI.
FROM ${JETPACK_IMAGE} AS jetson
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv --system-site-packages /opt/venv
WORKDIR /opt/edgepipe
COPY pyproject.toml README.md ./
COPY edgepipe/__init__.py edgepipe/__init__.py
# hadolint ignore=DL3013
RUN pip install ".[jetson]" && pip uninstall -y edgepipe
COPY edgepipe edgepipe
RUN pip install --no-deps . \
    && useradd --create-home --uid 1000 edgepipe \
    && usermod -aG video edgepipe
USER 1000
WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]
