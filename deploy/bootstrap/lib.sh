# Shared, idempotent set-up steps of `make up`, `make test` and .ci/run.
# Each ensure_* checks first and only installs or starts what is missing.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FLOWKIT_HOME=${FLOWKIT_HOME:-$HOME/.flowkit}
VENV=${FLOWKIT_VENV:-$REPO/.venv}
PYTHON=${FLOWKIT_PYTHON:-python3.11}
export FLOWKIT_HOME

say() { printf '\033[1;36m==>\033[0m %s\n' "$*"; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from Debian"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_python_env() { # $1: "" for the server, "dev" for the test tools too
  local extras=${1:-} spec stamp
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set FLOWKIT_PYTHON to a Python >= 3.11)"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the Python environment in $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  spec=$REPO${extras:+[$extras]}
  stamp="$VENV/.installed-${extras:-base}-$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing FlowKit${extras:+ with $extras tools} into $VENV"
    mkdir -p "$FLOWKIT_HOME/log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
           "$VENV/bin/python" -m pip install -q -e "$spec"; } >"$FLOWKIT_HOME/log/pip.log" 2>&1; then
      tail -n 30 "$FLOWKIT_HOME/log/pip.log" >&2
      die "pip install failed; the whole log is in $FLOWKIT_HOME/log/pip.log"
    fi
    touch "$stamp"
  fi
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    say "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432"
  if [ -z "${DATABASE_URL:-}" ] && ! psql -h 127.0.0.1 -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'flowkit'" | grep -q 1; then
    say "creating database flowkit"
    createdb -h 127.0.0.1 -U postgres flowkit
  fi
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/flowkit.log
    for _ in $(seq 20); do redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && break; sleep 0.5; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG || die "Redis does not answer on 127.0.0.1:6379"
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || apt_install docker.io
  say "starting the Docker engine"
  if [ -d /run/systemd/system ]; then
    as_root systemctl start docker
  else
    mkdir -p "$FLOWKIT_HOME/log"
    as_root sh -c "nohup setsid dockerd >'$FLOWKIT_HOME/log/dockerd.log' 2>&1 &"
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  die "the Docker engine did not start; see $FLOWKIT_HOME/log/dockerd.log"
}

ensure_npu_image() {
  apt_install debootstrap
  "$VENV/bin/flowkit" npu build
}

# The browser front end (web_ui/frontend): install the locked packages when the lock
# file changed, then `npm run build` (tsc --noEmit, vite build) into
# web_ui/static/web_ui/app/, skipped when the build there was made from the same
# sources (a hash stamp, as for pip). `npm install` rather than `npm ci`: the lock
# was made against a registry mirror without rollup's builds for other platforms,
# and `npm ci` refuses a lock that lacks optional packages; `npm install` installs
# the locked versions and skips optional packages it cannot get.
ensure_frontend() {
  local dir=$REPO/web_ui/frontend out=$REPO/web_ui/static/web_ui/app sources lock
  command -v npm >/dev/null || apt_install nodejs npm
  sources=$(cd "$dir" && find src package.json package-lock.json tsconfig.json vite.config.ts -type f -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if [ -f "$out/manifest.json" ] && [ "$(cat "$out/.source-hash" 2>/dev/null)" = "$sources" ]; then
    return 0
  fi
  mkdir -p "$FLOWKIT_HOME/log"
  lock=$(sha256sum "$dir/package-lock.json" | cut -c1-16)
  say "building the front end (log: $FLOWKIT_HOME/log/frontend.log)"
  if ! (cd "$dir" &&
        { [ "$(cat node_modules/.flowkit-lock-hash 2>/dev/null)" = "$lock" ] ||
          { npm install --no-audit --no-fund && echo "$lock" >node_modules/.flowkit-lock-hash; }; } &&
        npm run build) >"$FLOWKIT_HOME/log/frontend.log" 2>&1; then
    tail -n 30 "$FLOWKIT_HOME/log/frontend.log" >&2
    die "the front end did not build; the whole log is in $FLOWKIT_HOME/log/frontend.log"
  fi
  echo "$sources" >"$out/.source-hash"
}

# Debian's Chromium, which the browser tests drive through Playwright (Playwright's
# own browser download is not used).
ensure_chromium() {
  apt_install chromium chromium-driver
}
