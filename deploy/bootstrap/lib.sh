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
# gVisor (runsc) as a second NPU runtime, chosen with FLOWKIT_NPU_RUNTIME=runsc.
ensure_gvisor() {
  apt_install runsc
  local runsc_path args changed
  runsc_path=$(command -v runsc) || die "runsc is not on PATH after installing it"
  # runsc releases before mid-2024 mistake every network namespace for the host's on
  # kernels that expose /proc/sys/net/core/rmem_default per namespace (gVisor issue
  # 10704) and refuse to start. There its own network stack cannot be used: the
  # sandbox then passes socket calls to the kernel, still inside the NPU's own
  # network namespace (so the egress policy and network "none" still apply).
  # Not --oci-seccomp (which would apply the NPU's seccomp profile inside the sandbox):
  # with it, this release refuses select(2) to the fork server under the very profile
  # runc applies. Under runsc each execution's own filter is the layer (docs/SECURITY.md).
  args='[]'
  if unshare -n test -e /proc/sys/net/core/rmem_default 2>/dev/null; then
    args='["--network=host"]'
  fi
  as_root mkdir -p /etc/docker
  changed=$(as_root python3 - "$runsc_path" "$args" <<'PY'
import json, pathlib, sys
path = pathlib.Path("/etc/docker/daemon.json")
text = path.read_text() if path.exists() else ""
config = json.loads(text) if text.strip() else {}
wanted = {"path": sys.argv[1]}
if json.loads(sys.argv[2]):
    wanted["runtimeArgs"] = json.loads(sys.argv[2])
if config.get("runtimes", {}).get("runsc") == wanted:
    print("unchanged")
else:
    config.setdefault("runtimes", {})["runsc"] = wanted
    path.write_text(json.dumps(config, indent=2) + "\n")
    print("changed")
PY
)
  docker info >/dev/null 2>&1 || ensure_docker
  if [ "$changed" = changed ] || ! docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
    say "registering runsc with the Docker engine"
    # Runtimes are among the settings dockerd reloads on SIGHUP: running containers
    # (other runs' NPUs) survive. A restart is the fallback if the reload did not take.
    as_root pkill -HUP -x dockerd || true
    for _ in $(seq 10); do docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' && return 0; sleep 0.5; done
    say "restarting the Docker engine to register runsc"
    if [ -d /run/systemd/system ]; then
      as_root systemctl restart docker
    else
      as_root pkill -TERM -x dockerd || true
      for _ in $(seq 30); do pgrep -x dockerd >/dev/null || break; sleep 1; done
      ensure_docker
    fi
    docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' || die "the Docker engine did not register runsc"
  fi
}

# Network-enabled NPUs sit on a bridge whose gateway is this host. From that bridge,
# refuse everything addressed to the host itself (INPUT) and to private, link-local
# (cloud metadata), loopback, multicast and the host's own local networks (FORWARD,
# through Docker's DOCKER-USER chain); the public internet stays reachable, and so
# do the host's DNS resolvers on port 53 (Docker's embedded DNS forwards the NPU's
# queries from inside its namespace). Idempotent: both chains are rebuilt each time.
ensure_npu_egress_policy() {
  local network=${FLOWKIT_NPU_NETWORK:-flowkit-npu} fixed_bridge bridge cidr resolver
  command -v iptables >/dev/null || apt_install iptables
  fixed_bridge=$(npu_bridge_name "$network")
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    # The same network node_runner/npu_execution.py ensure_npu_network would create.
    docker network create --driver bridge --label flowkit.role=npu-network \
      -o com.docker.network.bridge.enable_icc=false \
      -o com.docker.network.bridge.name="$fixed_bridge" "$network" >/dev/null
  fi
  bridge=$(docker network inspect -f '{{index .Options "com.docker.network.bridge.name"}}' "$network")
  if [ -z "$bridge" ] || [ "$bridge" = "<no value>" ]; then
    bridge=br-$(docker network inspect -f '{{.Id}}' "$network" | cut -c1-12)
  fi
  as_root iptables -N FLOWKIT-NPU-EGRESS 2>/dev/null || true
  as_root iptables -N FLOWKIT-NPU-INPUT 2>/dev/null || true
  as_root iptables -F FLOWKIT-NPU-EGRESS
  as_root iptables -F FLOWKIT-NPU-INPUT
  as_root iptables -A FLOWKIT-NPU-EGRESS -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  for resolver in $(awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf); do
    as_root iptables -A FLOWKIT-NPU-EGRESS -d "$resolver" -p udp --dport 53 -j RETURN
    as_root iptables -A FLOWKIT-NPU-EGRESS -d "$resolver" -p tcp --dport 53 -j RETURN
  done
  for cidr in 0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 \
      192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/3 \
      $(ip -4 -o addr show scope global | awk '{print $4}'); do
    # The last group is every network this host has an address on (its LAN).
    as_root iptables -A FLOWKIT-NPU-EGRESS -d "$cidr" -j REJECT --reject-with icmp-admin-prohibited
  done
  as_root iptables -A FLOWKIT-NPU-EGRESS -j RETURN
  # An explicit, documented exception (docs/SECURITY.md): host TCP ports NPUs may
  # reach, e.g. a test's local echo server. Empty by default.
  for port in ${FLOWKIT_NPU_ALLOW_HOST_PORTS:-}; do
    as_root iptables -A FLOWKIT-NPU-INPUT -p tcp --dport "$port" -j ACCEPT
  done
  as_root iptables -A FLOWKIT-NPU-INPUT -j REJECT --reject-with icmp-admin-prohibited
  for iface in $(printf '%s\n' "$bridge" "$fixed_bridge" | sort -u); do
    as_root iptables -C DOCKER-USER -i "$iface" -j FLOWKIT-NPU-EGRESS 2>/dev/null ||
      as_root iptables -I DOCKER-USER -i "$iface" -j FLOWKIT-NPU-EGRESS
    as_root iptables -C INPUT -i "$iface" -j FLOWKIT-NPU-INPUT 2>/dev/null ||
      as_root iptables -I INPUT -i "$iface" -j FLOWKIT-NPU-INPUT
  done
  ensure_npu_egress_policy_ipv6 "$bridge" "$fixed_bridge"
}

# The NPU network has no IPv6 (Docker creates it without; the worker checks so,
# node_runner/egress_policy.py). Should it ever get IPv6 (a daemon-wide "ipv6", or a
# network edited by hand), nothing over IPv6 leaves the bridge: to the host (INPUT)
# and forwarded (FORWARD), everything is rejected. Stricter than IPv4, on purpose: an
# IPv6 allow-list of the public internet would have to keep up with ULA, link-local,
# mapped and NAT64 ranges, for nodes that have no IPv6 to use.
ensure_npu_egress_policy_ipv6() {
  local iface chain
  [ -e /proc/net/if_inet6 ] || return 0 # no IPv6 in this kernel: nothing to reject
  command -v ip6tables >/dev/null || apt_install iptables
  for chain in FLOWKIT-NPU-EGRESS FLOWKIT-NPU-INPUT; do
    as_root ip6tables -N "$chain" 2>/dev/null || true
    as_root ip6tables -F "$chain"
    as_root ip6tables -A "$chain" -j REJECT --reject-with icmp6-adm-prohibited
  done
  for iface in $(printf '%s\n' "$@" | sort -u); do
    as_root ip6tables -C FORWARD -i "$iface" -j FLOWKIT-NPU-EGRESS 2>/dev/null ||
      as_root ip6tables -I FORWARD -i "$iface" -j FLOWKIT-NPU-EGRESS
    as_root ip6tables -C INPUT -i "$iface" -j FLOWKIT-NPU-INPUT 2>/dev/null ||
      as_root ip6tables -I INPUT -i "$iface" -j FLOWKIT-NPU-INPUT
  done
}

# The bridge interface name FlowKit gives the NPU network (node_runner/npu_execution.py
# npu_bridge_name): fixed, so the egress policy matches a network created later.
npu_bridge_name() { printf 'fk-%s' "$1" | cut -c1-15; }

# The tests that run workers as separate hosts (tests/integration/hosts.py) make
# network namespaces and veth pairs with ip (iproute2) and give each host its own
# hostname with unshare (util-linux) and hostname.
ensure_test_hosts() {
  apt_install iproute2 util-linux hostname
}

# Everything `make test` and `make bench` run against: the dev environment, the built
# front end, Chromium, the services, the NPU image and its egress policy, and a
# compose binary to check deploy/compose.yml with.
ensure_test_stack() {
  ensure_python_env dev
  # `docker-compose config` checks deploy/compose.yml (tests/unit/test_compose_file.py).
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || apt_install docker-compose
  ensure_frontend
  ensure_chromium
  ensure_test_hosts
  ensure_postgres
  ensure_redis
  ensure_docker
  cd "$REPO"
  export DJANGO_SETTINGS_MODULE=tests.settings PYTHONPATH=$REPO
  ensure_npu_image
  ensure_npu_egress_policy
}
