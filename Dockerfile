# edgepipe images. CPU target for now: docker build --target cpu -t edgepipe:cpu .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/edgepipe
# dependencies first, so code changes do not invalidate the heavy layer
COPY pyproject.toml README.md ./
COPY edgepipe/__init__.py edgepipe/__init__.py
RUN pip install --no-cache-dir . && pip uninstall -y edgepipe
COPY edgepipe edgepipe
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1000 edgepipe
USER edgepipe
WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]
