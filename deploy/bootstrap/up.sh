#!/usr/bin/env bash
# `make up`: bring up the whole of FlowKit on this machine, then print the URL and
# the admin credentials. Safe to run again: it restarts the web process and worker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/supervisor.sh"

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

# The worker removes what its previous life left (NPUs, its pool's waiting ones) as it
# starts; other workers' NPUs on this engine (tests, other installations) are not ours.
stop_supervisor

cd "$REPO"
# What deploy/supervisor/{web,worker}.conf read from the supervisor's environment.
# The base queue and one queue per subset of FLOWKIT_WORKER_CAPABILITIES
# (control_unit/routing.py), read from the same settings as the server.
FLOWKIT_WORKER_QUEUES=$("$VENV/bin/flowkit" workers queues)
FLOWKIT_WORKER_AUTOSCALE=$WORKER_CONCURRENCY_MAX,$WORKER_CONCURRENCY_MIN
FLOWKIT_WORKER_NAME=worker@$(hostname)
FLOWKIT_BIND=$BIND FLOWKIT_PORT=$PORT
FLOWKIT_SUPERVISED="web.conf worker.conf"
export FLOWKIT_WORKER_QUEUES FLOWKIT_WORKER_AUTOSCALE FLOWKIT_WORKER_NAME FLOWKIT_BIND FLOWKIT_PORT FLOWKIT_SUPERVISED
say "starting the web process and the worker under the supervisor (logs: $LOG_DIR/web.log, $LOG_DIR/worker.log)"
start_supervisor

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
