#!/usr/bin/env bash
# Container entrypoint: [embedded redis-server] + Celery worker (with its
# housekeeping: sweeper, gauges, session expiry) + [Flower] + gunicorn on loopback
# + HAProxy on $PORT. Forwards
# SIGTERM/SIGINT to every child and exits as soon as any child dies, so the
# platform restarts it.
set -uo pipefail
cd "$(dirname "$0")"
# Whatever the processes write under DATA_DIR (the webhook token, Redis's
# append-only files and the spool, which hold message contents and phone
# numbers) is readable by this user only.
umask 077

PORT="${PORT:-8080}"
DATA_DIR="${DATA_DIR:-$PWD/data}"
export DATA_DIR  # the web processes keep their spool there while Redis is unreachable
# A threads pool: a bot call is I/O, and with one slot (solo) every conversation waits
# for the one before it (docs/performance.md, "Many conversations at once"). The lease
# keeps each conversation to one drain at a time whatever the pool.
CELERY_POOL="${CELERY_POOL:-threads}"
if [ "$CELERY_POOL" = solo ]; then default_concurrency=1; else default_concurrency=64; fi
CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-$default_concurrency}"
# Tasks a worker reserves per pool slot. With 1, a threads pool that frees a
# slot waits for the broker's next one-second poll: 4 keeps slots busy.
if [ "$CELERY_POOL" = threads ]; then default_prefetch=4; else default_prefetch=1; fi
CELERY_PREFETCH_MULTIPLIER="${CELERY_PREFETCH_MULTIPLIER:-$default_prefetch}"
WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}"
WEB_THREADS="${WEB_THREADS:-4}"
WEB_INTERNAL_PORT="${WEB_INTERNAL_PORT:-8089}"
GRACEFUL_TIMEOUT="${GRACEFUL_TIMEOUT:-20}"
app_pids=()
redis_pid=""
stopping=0

log() { echo "start.sh: $*" >&2; }

mkdir -p "$DATA_DIR" || { log "DATA_DIR $DATA_DIR cannot be created"; exit 2; }
for name in CELERY_CONCURRENCY CELERY_PREFETCH_MULTIPLIER WEB_CONCURRENCY WEB_THREADS WEB_INTERNAL_PORT; do
  [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || { log "$name must be a positive whole number, got '${!name}'"; exit 2; }
done
# The address Chatwoot reaches, for the printed webhook URL: PUBLIC_URL, else Railway's
# public domain, else this machine's port (a container published on another port, or
# behind a proxy, should set PUBLIC_URL).
PUBLIC_URL="${PUBLIC_URL:-}"
if [ -z "$PUBLIC_URL" ] && [ -n "${RAILWAY_PUBLIC_DOMAIN:-}" ]; then PUBLIC_URL="https://$RAILWAY_PUBLIC_DOMAIN"; fi
[[ -z "$PUBLIC_URL" || "$PUBLIC_URL" =~ ^https?://[^/[:space:]]+$ ]] \
  || { log "PUBLIC_URL must be http(s)://host[:port] with no path, got '$PUBLIC_URL'"; exit 2; }
public_url="${PUBLIC_URL:-http://localhost:${PORT}}"

# Every program this script starts, checked before anything starts: a missing one
# stops start-up with its name and how to get it (not "setsid: failed to execute").
need() { command -v "$1" >/dev/null 2>&1 || { log "$1 not found on PATH: $2"; exit 2; }; }
need python "install Python 3.11+"
for program in celery gunicorn; do
  need "$program" "the Python requirements are not installed here (make run installs them; in an image: pip install --require-hashes -r requirements.lock)"
done
need haproxy "it holds the public port (Debian/Ubuntu: apt-get install haproxy; make run installs it)"
if [ -z "${REDIS_URL:-}" ]; then
  need redis-server "REDIS_URL is unset, so an embedded Redis is started (Debian/Ubuntu: apt-get install redis-server; or set REDIS_URL)"
  need redis-cli "it comes with redis-server (Debian/Ubuntu: apt-get install redis-server)"
fi

start_embedded_redis() {
  local port="${EMBEDDED_REDIS_PORT:-6399}"
  mkdir -p "$DATA_DIR/redis"
  # A password of its own (kept in DATA_DIR, readable by this user only): another
  # process of the machine that reaches 127.0.0.1 cannot read or write the queues.
  # It goes to redis-server on stdin and to redis-cli in its environment, never on
  # a command line.
  local password_file="$DATA_DIR/redis/password"
  [ -s "$password_file" ] || python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$password_file"
  local password
  password="$(cat "$password_file")"
  # A memory ceiling with noeviction: past it Redis refuses writes (webhooks spool, then
  # answer 500, and Chatwoot retries) instead of growing until the container is
  # OOM-killed and its AOF, replayed at boot, kills it again. EMBEDDED_REDIS_MAXMEMORY
  # (bytes, or 512mb, 2gb); by default half the container's memory limit, else 2gb.
  local maxmemory="${EMBEDDED_REDIS_MAXMEMORY:-}"
  if [ -z "$maxmemory" ]; then
    local limit=""
    [ -r /sys/fs/cgroup/memory.max ] && limit="$(cat /sys/fs/cgroup/memory.max)"
    [ -z "$limit" ] && [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ] \
      && limit="$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
    case "$limit" in
      ''|max|*[!0-9]*) maxmemory=2gb ;;
      *) if [ "$limit" -lt 8589934592000 ]; then maxmemory="$(( limit / 2 ))"; else maxmemory=2gb; fi ;;
    esac
  fi
  case "$maxmemory" in
    *[!0-9kKmMgGbB]*|'') log "EMBEDDED_REDIS_MAXMEMORY must be bytes or like 512mb, got '$maxmemory'"; exit 2 ;;
  esac
  printf 'requirepass %s\n' "$password" | setsid redis-server - --bind 127.0.0.1 --port "$port" \
    --dir "$DATA_DIR/redis" --appendonly yes --appendfsync always --save "" --logfile "" --loglevel warning \
    --maxmemory "$maxmemory" --maxmemory-policy noeviction &
  redis_pid=$!
  export REDIS_URL="redis://:${password}@127.0.0.1:${port}/0"
  for _ in $(seq 1 50); do
    REDISCLI_AUTH="$password" redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  REDISCLI_AUTH="$password" redis-cli -p "$port" ping >/dev/null 2>&1 \
    || { log "embedded redis-server did not start"; exit 1; }
  log "REDIS_URL is unset: started an embedded redis-server on 127.0.0.1:${port}" \
      "with append-only persistence in $DATA_DIR/redis (password in $password_file)"
  if [ -z "${CHATWOOT_WEBHOOK_SECRET:-}" ] && [ -z "${WEBHOOK_TOKEN:-}" ] && [ -z "${COMPANIES_FILE:-}" ]; then
    local token_file="$DATA_DIR/webhook_token"
    if [ -s "$token_file" ]; then
      WEBHOOK_TOKEN="$(cat "$token_file")"
      export WEBHOOK_TOKEN
      # The URL with its token was printed when the token was made; not on every boot.
      log "no webhook secret configured: using the WEBHOOK_TOKEN kept in $token_file" \
          "(the webhook URL is ${public_url}/webhook/chatwoot/${COMPANY_ID:-default}?token=<that token>)"
    else
      python -c 'import secrets; print(secrets.token_urlsafe(24))' >"$token_file"
      WEBHOOK_TOKEN="$(cat "$token_file")"
      export WEBHOOK_TOKEN
      log "no webhook secret configured: generated WEBHOOK_TOKEN (kept in $token_file)."
      log "point Chatwoot at ${public_url}/webhook/chatwoot/${COMPANY_ID:-default}?token=${WEBHOOK_TOKEN}"
      [ -n "$PUBLIC_URL" ] || log "(that is this machine's port ${PORT}: published on another port, or behind a" \
        "proxy, set PUBLIC_URL to the address Chatwoot reaches)"
    fi
  fi
}

[ -n "${REDIS_URL:-}" ] || start_embedded_redis

python -m app check-config || exit 2

# Each child runs in its own process group (setsid) so that whatever it leaves
# behind (the worker's embedded beat process, say) can be stopped with it.
setsid celery -A app.worker worker -E --pool="$CELERY_POOL" --concurrency="$CELERY_CONCURRENCY" \
  --prefetch-multiplier="$CELERY_PREFETCH_MULTIPLIER" --loglevel=INFO &
app_pids+=($!)

# prometheus-client multiprocess mode: every gunicorn worker writes its figures
# here and /metrics sums them; stale files of an earlier run are removed first.
PROMETHEUS_MULTIPROC_DIR="$DATA_DIR/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
# gunicorn listens on loopback only; HAProxy takes the public port (below).
# deploy/gunicorn.conf.py holds the rest: threaded workers (WEB_THREADS each) with
# keep-alive, and an access log that shows the path only, never a ?token= query
# (gunicorn's own error lines are masked there too).
PROMETHEUS_MULTIPROC_DIR="$PROMETHEUS_MULTIPROC_DIR" WEB_THREADS="$WEB_THREADS" setsid gunicorn wsgi:app \
  --config deploy/gunicorn.conf.py --bind "127.0.0.1:${WEB_INTERNAL_PORT}" --workers "$WEB_CONCURRENCY" \
  --graceful-timeout "$GRACEFUL_TIMEOUT" &
app_pids+=($!)
web_pid=$!

# HAProxy (and Flower, when enabled) on the public port. Its buffer holds a whole
# request of MAX_BODY_BYTES plus headers (a larger one goes on to get its 413);
# its connections are bounded so that its buffers stay within about 256 MB.
PROXY_BUFSIZE="$(( ${MAX_BODY_BYTES:-1048576} + 16384 ))"
PROXY_MAXCONN="$(( 268435456 / PROXY_BUFSIZE ))"
[ "$PROXY_MAXCONN" -ge 64 ] || PROXY_MAXCONN=64
[ "$PROXY_MAXCONN" -le 4096 ] || PROXY_MAXCONN=4096
# HAProxy faces the internet: it gets only what its configuration reads, never the
# secrets (REDIS_URL with its password, API keys, webhook secrets, STATUS_BASIC_AUTH).
proxy_env=(PATH="$PATH" PORT="$PORT" WEB_INTERNAL_PORT="$WEB_INTERNAL_PORT"
  PROXY_BUFSIZE="$PROXY_BUFSIZE" PROXY_MAXCONN="$PROXY_MAXCONN")
if [ -n "${FLOWER_BASIC_AUTH:-}" ]; then
  case "$FLOWER_BASIC_AUTH" in
    ?*:?*) ;;
    *) log "FLOWER_BASIC_AUTH must look like user:password"; exit 2 ;;
  esac
  export FLOWER_PORT="${FLOWER_PORT:-5555}"
  # HAProxy compares a SHA-256 digest of the Authorization header a browser sends for
  # these credentials (a cheap check: a guess costs the proxy nothing, and the event
  # loop never waits on a slow hash); Flower checks the password itself as well. The
  # password goes through stdin, never a command line (ps would show it).
  flower_digest="$(printf '%s\n' "$FLOWER_BASIC_AUTH" | python -c '
import base64, hashlib, sys
credentials = sys.stdin.readline().rstrip("\n").encode()
print(hashlib.sha256(b"Basic " + base64.b64encode(credentials)).hexdigest().upper())')" \
    || { log "digesting the Flower credentials failed"; exit 2; }
  proxy_env+=(FLOWER_PORT="$FLOWER_PORT" FLOWER_AUTH_DIGEST="$flower_digest")
  # Flower reads FLOWER_BASIC_AUTH from the environment (its own check behind HAProxy's).
  setsid celery -A app.worker flower --address=127.0.0.1 --port="$FLOWER_PORT" --url_prefix=flower &
  app_pids+=($!)
  log "Flower enabled: ${public_url}/flower/ (basic auth)"
fi
# HAProxy starts once gunicorn listens: a request never meets a proxy without its
# upstream (a 503, which would also log the request).
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/${WEB_INTERNAL_PORT}") 2>/dev/null && break
  kill -0 "$web_pid" 2>/dev/null || break
  sleep 0.1
done
setsid env -i "${proxy_env[@]}" haproxy -db -f deploy/haproxy.cfg &
app_pids+=($!)

on_signal() { stopping=1; }
trap on_signal TERM INT
# A closed stdout (a log pipe gone) must not kill this script before it has
# stopped its children.
trap '' PIPE

# The embedded redis-server is watched like the rest: without it nothing is
# durable, so its death stops the container and the platform restarts it.
watched=("${app_pids[@]}")
[ -z "$redis_pid" ] || watched+=("$redis_pid")
wait -n "${watched[@]}"
code=$?
if [ "$stopping" = 1 ]; then
  log "signal received: stopping children"
elif [ -n "$redis_pid" ] && ! kill -0 "$redis_pid" 2>/dev/null; then
  log "the embedded redis-server exited (code $code): stopping the others"
else
  log "a child exited (code $code): stopping the others"
fi

# Application first (the worker finishes or hands back its batch), Redis last.
# SIGTERM goes to each main process, which stops its own children gracefully;
# then whatever is left in a child's process group is killed.
stop_children() {
  kill -TERM "$@" 2>/dev/null
  for pid in "$@"; do wait "$pid" 2>/dev/null; done
  for pid in "$@"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
stop_children "${app_pids[@]}"
[ -z "$redis_pid" ] || stop_children "$redis_pid"
log "all children exited"
if [ "$stopping" = 1 ]; then exit 0; fi
exit $(( code == 0 ? 1 : code ))
