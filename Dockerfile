# videobot: one image for every role (gateway, worker, all) and the gallery.
# Not built on the machines this project is developed on (no image registry is reachable
# there); tests/observability/test_container.py checks this file against the code instead.
FROM python:3.11-slim-bookworm

# tini reaps children and forwards SIGTERM, so `docker stop` lets jobs stop cleanly (they resume).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIDEOBOT_DATA_DIR=/data \
    VIDEOBOT_MEDIA_DIR=/media \
    VIDEOBOT_LOG_FORMAT=json \
    VIDEOBOT_METRICS_HOST=0.0.0.0 \
    VIDEOBOT_METRICS_PORT=9464

WORKDIR /app
# The project from this checkout (PyAV and Pillow wheels bring their own codecs: no ffmpeg).
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY providers ./providers
COPY storage ./storage
RUN pip install --no-compile . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin videobot \
    && mkdir -p /data /media \
    && chown videobot:videobot /data /media

VOLUME ["/data", "/media"]
USER videobot
# 9464: /metrics, /healthz, /readyz; 8080: the gallery; 3000: Slack's requests (HTTP mode).
EXPOSE 9464 8080 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VIDEOBOT_METRICS_PORT', '9464') + '/healthz', timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--", "videobot"]
CMD ["run"]
