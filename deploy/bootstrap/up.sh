#!/usr/bin/env bash
# `make up`: bring up the whole of FlowKit on this machine, then print the URL and
# the admin credentials. Safe to run again: it restarts the web process and worker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=${FLOWKIT_PORT:-8000}
BIND=${FLOWKIT_BIND:-127.0.0.1}
# The worker's pool grows and shrinks between these (Celery's --autoscale MAX,MIN).
WORKER_CONCURRENCY_MAX=${FLOWKIT_WORKER_CONCURRENCY_MAX:-${FLOWKIT_WORKER_CONCURRENCY:-2}}
WORKER_CONCURRENCY_MIN=${FLOWKIT_WORKER_CONCURRENCY_MIN:-1}
RUN_DIR=$FLOWKIT_HOME/run
LOG_DIR=$FLOWKIT_HOME/log

ensure_env_file() {
  mkdir -p "$FLOWKIT_HOME" "$RUN_DIR" "$LOG_DIR"
  chmod 700 "$FLOWKIT_HOME"
  local env_file=$FLOWKIT_HOME/flowkit.env
  if [ ! -f "$env_file" ]; then
    say "writing $env_file (a new SECRET_KEY; keep this file private)"
    umask 077
    {
      echo "# Written by make up; see deploy/.env.example for every variable."
      echo "SECRET_KEY=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')"
      echo "DEBUG=false"
      echo "ALLOWED_HOSTS=localhost,127.0.0.1,[::1]"
    } >"$env_file"
  fi
  if ! grep -q '^FLOWKIT_SECRET_KEYS=' "$env_file"; then
    say "adding a secret-vault master key to $env_file (back it up: without it no secret can be read)"
    umask 077
    echo "FLOWKIT_SECRET_KEYS=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')" >>"$env_file"
  fi
}

stop_process() { # $1: name
  local pid_file=$RUN_DIR/$1.pid pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

start_process() { # $1: name, rest: command
  local name=$1; shift
  say "starting $name (log: $LOG_DIR/$name.log)"
  nohup setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

ensure_env_file
ensure_python_env ""
ensure_postgres
ensure_redis
ensure_docker
ensure_npu_image
ensure_frontend
ensure_npu_egress_policy
# gVisor only where this installation asked for it (FLOWKIT_NPU_RUNTIME=runsc).
if [ "${FLOWKIT_NPU_RUNTIME:-}" = runsc ] || grep -q "^FLOWKIT_NPU_RUNTIME=runsc" "$FLOWKIT_HOME/flowkit.env"; then
  ensure_gvisor
fi

say "migrating the database"
"$VENV/bin/python" "$REPO/manage.py" migrate --noinput -v0
"$VENV/bin/python" "$REPO/manage.py" collectstatic --noinput -v0

stop_process web
stop_process worker
# The worker removes what its previous life left (NPUs, its pool's waiting ones) as it
# starts; other workers' NPUs on this engine (tests, other installations) are not ours.

cd "$REPO"
# The base queue and one queue per subset of FLOWKIT_WORKER_CAPABILITIES
# (control_unit/routing.py), read from the same settings as the server.
WORKER_QUEUES=$("$VENV/bin/flowkit" workers queues)
start_process worker "$VENV/bin/celery" -A node_runner worker --queues "$WORKER_QUEUES" \
  --autoscale "$WORKER_CONCURRENCY_MAX,$WORKER_CONCURRENCY_MIN" --hostname "worker@%h" --loglevel INFO
start_process web "$VENV/bin/daphne" -b "$BIND" -p "$PORT" web_ui.asgi:application

URL="http://$BIND:$PORT/"
say "waiting for $URL healthz"
for _ in $(seq 60); do
  if curl -fsS "${URL}healthz" >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS "${URL}healthz" >/dev/null 2>&1 || {
  curl -sS "${URL}healthz" || true
  die "FlowKit did not become healthy; see $LOG_DIR/web.log and $LOG_DIR/worker.log"
}

"$VENV/bin/flowkit" admin init
echo
say "FlowKit is up: $URL"
echo "    stop it with: make down"
