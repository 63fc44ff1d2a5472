#!/usr/bin/env bash
# `make down`: stop the web process and the worker started by `make up`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for name in web worker; do
  pid_file=$FLOWKIT_HOME/run/$name.pid
  [ -f "$pid_file" ] || continue
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
done
