# The process supervisor of `make up` and `make down` (supervisord, installed into the
# Python environment from PyPI with FlowKit's dependencies): it runs the web process
# and the worker (deploy/supervisor/*.conf) and starts again whichever exits.
# Source after lib.sh.
# shellcheck shell=bash

SUPERVISOR_CONF=$REPO/deploy/supervisor/supervisord.conf
SUPERVISOR_PID=$FLOWKIT_HOME/run/supervisord.pid

supervisorctl_() {
  "$VENV/bin/supervisorctl" -s "unix://$FLOWKIT_HOME/run/supervisor.sock" "$@"
}

# Stop the supervisor and, through it, its programs (each its warm shutdown, within
# the program's stopwaitsecs). Also stops the web process and worker of a `make up`
# older than the supervisor (pid files in $FLOWKIT_HOME/run).
stop_supervisor() {
  local pid name pid_file
  if [ -f "$SUPERVISOR_PID" ] && pid=$(cat "$SUPERVISOR_PID") && kill -0 "$pid" 2>/dev/null; then
    say "stopping the supervisor (pid $pid) and the web process and worker it runs"
    supervisorctl_ shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    # The worker may take its stopwaitsecs (30 s) to finish its nodes.
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "the supervisor did not stop; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$SUPERVISOR_PID"
  stop_orphans
  for name in web worker; do
    pid_file=$FLOWKIT_HOME/run/$name.pid
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name (pid $pid, started without the supervisor)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
  done
}

# A supervisor killed outright (SIGKILL, an OOM kill) leaves its programs running
# without it: a second worker under the same name, a web process holding the port.
# They carry FLOWKIT_SUPERVISED_BY (start_supervisor), so they are found exactly, by
# their environment, not by a name pattern that could match someone else's process.
stop_orphans() {
  local pid pids=()
  for pid in $(grep -lsxzF "FLOWKIT_SUPERVISED_BY=$FLOWKIT_HOME" /proc/[0-9]*/environ | cut -d/ -f3); do
    [ "$pid" = "$$" ] || pids+=("$pid")
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  say "stopping ${#pids[@]} processes a killed supervisor left running (pids ${pids[*]})"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # Not for long: their output went to the dead supervisor, and a worker's warm
  # shutdown, writing to that broken pipe, did not end within 30 s when tried.
  for _ in $(seq 10); do
    any_alive "${pids[@]}" || break
    sleep 1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Whether any of the pids still runs (a zombie, waiting for init to reap it, does not).
any_alive() {
  local pid state
  for pid in "$@"; do
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ] && return 0
  done
  return 1
}

# Start the supervisor with the programs named in FLOWKIT_SUPERVISED (files beside
# supervisord.conf); the variables the program files read must be exported.
start_supervisor() {
  mkdir -p "$FLOWKIT_HOME/run" "$FLOWKIT_HOME/log"
  export FLOWKIT_REPO=$REPO FLOWKIT_VENV=$VENV FLOWKIT_SUPERVISED_BY=$FLOWKIT_HOME
  "$VENV/bin/supervisord" -c "$SUPERVISOR_CONF" || die "the supervisor did not start; see $FLOWKIT_HOME/log/supervisord.log"
  for _ in $(seq 30); do supervisorctl_ pid >/dev/null 2>&1 && break; sleep 0.5; done
  say "supervisor running (pid $(cat "$SUPERVISOR_PID")); \`$VENV/bin/supervisorctl -s unix://$FLOWKIT_HOME/run/supervisor.sock status\` shows its programs"
}
