# syntax=docker/dockerfile:1.7
# The API image: FastAPI + asyncpg, no torch.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv && /opt/venv/bin/pip install '.[api]'

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /app mnemo
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 MNEMO_LOG_FORMAT=json \
    MNEMO_API_HOST=0.0.0.0 MNEMO_API_PORT=8000
USER mnemo
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status == 200 else 1)"
CMD ["mnemo-api"]
