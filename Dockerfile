# rlserve serving image: `rlserve serve --host 0.0.0.0` with a required bearer token.
#
#   docker build -t rlserve:cpu .                            # CPU (default): CPU-only torch
#   docker build --build-arg VARIANT=cuda -t rlserve:cuda .  # CUDA torch and onnxruntime-gpu
#   docker run --rm -p 127.0.0.1:8000:8000 -e RLSERVE_TOKEN=... \
#       -v "$PWD/artifact:/artifacts/policy:ro" rlserve:cpu
#
# No Docker engine runs where this project is developed and tested, so the install steps live
# in docker/install.sh, which mirrors the README's `make` set-up (torch first, pinned, then the
# project) and which tests/test_dockerfile.py runs and compares with the Makefile.
# The CUDA variant needs no CUDA base image: torch's and onnxruntime-gpu's CUDA libraries come
# as wheels, and the driver from the host (`docker run --gpus all`); one base image keeps the
# Python that the project is tested with.

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- build: a virtualenv in /opt
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

# cpu or cuda.
ARG VARIANT=cpu
# The Makefile's TORCH_SPEC (tests/test_dockerfile.py keeps them equal).
ARG TORCH_SPEC=torch==2.13.0
# Empty: the variant's default (cpu: PyTorch's CPU wheel index; cuda: the ordinary index).
ARG TORCH_INDEX_URL=
# The same range as pyproject.toml's onnxruntime; the extras bring its CUDA and cuDNN wheels.
ARG ONNXRUNTIME_GPU_SPEC="onnxruntime-gpu[cuda,cudnn]>=1.20,<2"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY formats ./formats
COPY training ./training
COPY exporters ./exporters
COPY serving ./serving
COPY rlserve ./rlserve
COPY docker/install.sh ./docker/install.sh
# The ARGs above reach the script as environment variables.
RUN PYTHON=/opt/venv/bin/python sh docker/install.sh

# ---------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VARIANT=cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_TMPDIR=/tmp \
    RLSERVE_PORT=8000

# tini as PID 1: forwards the stop signal to rlserve and reaps the processes Ray leaves behind.
# Not version-pinned: Debian's security updates should come in with each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

# CUDA: make the CUDA/cuDNN libraries that came as wheels (site-packages/nvidia/...) findable by
# the dynamic loader, so onnxruntime's CUDA provider loads whether or not torch was imported.
RUN if [ "$VARIANT" = cuda ]; then \
        find /opt/venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' \
            | sort -u > /etc/ld.so.conf.d/rlserve-nvidia-wheels.conf \
        && ldconfig; \
    fi

# A non-root user with a home; Ray keeps its session files under $RAY_TMPDIR (/tmp).
RUN useradd --create-home --uid 10001 --user-group rlserve \
    && mkdir -p /artifacts \
    && chown rlserve:rlserve /artifacts
USER 10001:10001
WORKDIR /home/rlserve

EXPOSE 8000
# rlserve serve stops cleanly on Ctrl-C (SIGINT): `docker stop` sends that.
STOPSIGNAL SIGINT
# /healthz needs no token. Ray and Serve take a while to start: hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RLSERVE_PORT', '8000') + '/healthz', timeout=4)"]

# rlserve serve --host 0.0.0.0 --port $RLSERVE_PORT --token $RLSERVE_TOKEN [ARGS]; exits 2
# when RLSERVE_TOKEN is unset. ARGS: artifact directories and serve options (default:
# /artifacts/policy).
ENTRYPOINT ["tini", "--", "python", "-m", "rlserve.container"]
CMD []
