# eventservice: the app only. PostgreSQL runs in its own container (docker-compose.yml)
# or anywhere DATABASE_URL points; the image never starts an embedded database.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# requirements.txt is what the service needs to run (tests, benchmarks and lint are in
# requirements-dev.txt, which the image never sees). pgserver (the embedded PostgreSQL
# for `python -m app` on a workstation) is left out as well: in a container
# DATABASE_URL is always set and pgserver is only imported without it.
# Every dependency ships wheels, so no compiler is installed.
COPY requirements.txt ./
RUN grep -v '^pgserver' requirements.txt > /tmp/runtime-requirements.txt \
    && pip install -r /tmp/runtime-requirements.txt \
    && rm /tmp/runtime-requirements.txt

# The app finds its migrations in ../schema relative to the package: /app/schema.
COPY schema/ ./schema/
COPY app/ ./app/

RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin eventservice
USER 10001:10001

# Inside a container the service must listen on every interface; with that bind it
# refuses to start unless INGEST_TOKENS/READ_TOKENS are set (or INSECURE=1).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
EXPOSE 8000

# Slim images have no curl: ask Python. urlopen raises on a refused connection or a
# non-2xx answer, so the exit status is the health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthcheck' % os.environ.get('PORT', '8000'), timeout=3)"]

# Exec form: the Python process gets SIGTERM directly and shuts down gracefully.
CMD ["python", "-m", "app"]
