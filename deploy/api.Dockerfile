# syntax=docker/dockerfile:1.7
# The API image: FastAPI + asyncpg + the `mnemo` CLI (which also runs the stack's one-shot
# migrations). It installs `.[api]` only: no torch, no model (target: under 250 MB).
#   docker build -f deploy/api.Dockerfile -t mnemolite-api .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY db ./db
# BuildKit keeps downloaded wheels between builds: a code change reinstalls from the cache.
# Then: drop pip and the packages' own test suites (numpy's alone is ~15 MB), check that the
# API and the CLI import, and that no torch came in.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install '.[api]' \
 && pip uninstall -y pip setuptools \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && python -c "import mnemo_api.app, mnemo_cli.main" \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mnemolite-api" \
      org.opencontainers.image.description="MnemoLite API (no torch)"
RUN groupadd --system --gid 10001 mnemo \
 && useradd --system --uid 10001 --gid mnemo --home-dir /app --shell /usr/sbin/nologin mnemo
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNEMO_LOG_FORMAT=json \
    MNEMO_API_HOST=0.0.0.0 \
    MNEMO_API_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Ready = the database answers and every migration is applied (not just "the process is up").
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=3).status != 200)"]
CMD ["mnemo-api"]
