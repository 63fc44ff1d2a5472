"""The test hosts of tests/integration/hosts.py: a host has its own address, hostname
and loopback, reaches PostgreSQL and Redis only through its forwarders, and what a
crashed test run left (namespace, processes in it, veth, INPUT rules) is removed by
the next one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings

from tests.integration.conftest import REPO, database_url_for_processes
from tests.integration.hosts import (
    input_rules_of,
    namespace_of,
    remove_unowned_leftovers,
    separate_hosts,
    veth_of,
)


def on(host, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(host.command(["sh", "-c", script]), capture_output=True, text=True, timeout=30)


def test_a_host_has_its_own_address_and_name_and_reaches_the_services_through_its_gateway(transactional_db):
    services = [database_url_for_processes(), settings.REDIS_URL]
    with separate_hosts(["hostA"], services) as (host,):
        assert on(host, "hostname").stdout.strip() == "hostA"
        assert f"inet {host.address}/24" in on(host, "ip -4 -o addr show dev eth0").stdout
        redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
        database = host.reachable_url(database_url_for_processes())
        assert on(host, f"redis-cli -h {host.gateway} -p {redis_port} ping").stdout.strip() == "PONG"
        assert on(host, f"psql '{database}' -tAc 'select 42'").stdout.strip() == "42"
        # The machine's own loopback, where the services listen, is not the host's.
        assert on(host, f"redis-cli -h 127.0.0.1 -p {redis_port} ping").returncode != 0


def test_what_a_crashed_run_left_is_removed_by_the_next(tmp_path):
    ready = tmp_path / "subnet"
    crashed = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from tests.integration.hosts import separate_hosts\n"
         "with separate_hosts(['hostA'], ['redis://127.0.0.1:6379/0']) as (host,):\n"
         "    subprocess.Popen(host.command(['sleep', '600']))\n"
         f"    open({str(ready)!r}, 'w').write(str(host.subnet))\n"
         "    time.sleep(600)\n"],
        cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text():
        assert crashed.poll() is None, "the test hosts did not start"
        assert time.monotonic() < deadline, "the test hosts did not start"
        time.sleep(0.05)
    subnet = int(ready.read_text())
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=10)
    namespace = namespace_of(subnet)
    assert namespace in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    assert input_rules_of(subnet)

    remove_unowned_leftovers()

    assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", veth_of(subnet)], capture_output=True).returncode != 0
    assert input_rules_of(subnet) == []
