# rlserve serving image (CPU by default).
# The install steps mirror the README's `make` set-up: torch first, pinned, then the project.
#   docker build -t rlserve .
#   docker build --build-arg TORCH_SPEC=torch==2.13.0 --build-arg TORCH_INDEX_URL=<cpu or cuda wheel index> -t rlserve .
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
# Optional: a wheel index to take torch from (e.g. a CPU-only or a CUDA index).
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN useradd --create-home --uid 10001 rlserve
WORKDIR /opt/rlserve
COPY pyproject.toml README.md ./
COPY training ./training
COPY exporters ./exporters
COPY serving ./serving
COPY rlserve ./rlserve

RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "$TORCH_SPEC"; \
    fi \
    && pip install .

USER rlserve
ENTRYPOINT ["rlserve"]
CMD ["--help"]
