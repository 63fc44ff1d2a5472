#!/usr/bin/env bash
# `make down`: stop the supervisor started by `make up`, and with it the web process
# and the worker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/supervisor.sh"
stop_supervisor
