# One container: gunicorn (web) + Celery worker with the sweeper (+ Flower),
# and an embedded redis-server when REDIS_URL is unset.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    DATA_DIR=/data

RUN apt-get update \
 && apt-get install -y --no-install-recommends tini redis-server haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 gateway \
 && mkdir -p /data && chown gateway:gateway /data && chmod 700 /data

WORKDIR /app
# Every package pinned with its hashes (requirements.lock, from requirements.txt by
# `make lock`): a rebuild installs exactly what was tested, or fails.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
# The code belongs to root and is read-only to the user that runs it.
COPY . .

VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8080\")}/healthz', timeout=2)"

# tini is PID 1: it forwards signals and reaps orphans. The entrypoint starts as
# root only to hand a root-owned volume to `gateway`, then runs start.sh as it.
ENTRYPOINT ["/usr/bin/tini", "--", "deploy/entrypoint.sh"]
