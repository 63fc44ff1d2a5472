"""Hostile code tries to reach the services on the host (PostgreSQL, Redis, anything
listening), the host's networks, the cloud metadata address, the outside, DNS, and
raw sockets. A listener on every host address shows, from the host, whether any
connection got through."""

from __future__ import annotations

import errno
import socket
import subprocess
from pathlib import Path

import docker
import pytest

from node_runner.egress_policy import check_egress_policy, npu_bridge
from tests.security.conftest import egress_policy_installed, host_addresses, node_code, runtime

CONNECT = node_code(
    """
import socket
value = {}
for host, port in node.get_inputs()['targets']:
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect((host, port))
        value[f'{host}:{port}'] = 'connected'
    except socket.timeout:
        value[f'{host}:{port}'] = 'timeout'
    except OSError as exc:
        value[f'{host}:{port}'] = exc.errno
    finally:
        sock.close()
"""
)
RESOLVE = node_code(
    """
import socket
try:
    value = sorted({info[4][0] for info in socket.getaddrinfo('deb.debian.org', 443, socket.AF_INET)})
except OSError as exc:
    value = f'{type(exc).__name__}: {exc}'
"""
)
RAW_SOCKETS = node_code(
    """
import socket
value = {}
for name, family, kind, proto in [('inet_raw_icmp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                                  ('inet_raw_tcp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                                  ('packet', socket.AF_PACKET, socket.SOCK_RAW, 0x0300)]:
    try:
        socket.socket(family, kind, proto).close()
        value[name] = 'opened'
    except OSError as exc:
        value[name] = exc.errno
"""
)
LOCAL_SERVICES = [("127.0.0.1", 5432), ("127.0.0.1", 6379)]


@pytest.fixture
def policy() -> None:
    assert egress_policy_installed(), (
        "the NPU egress policy is not installed on this host: run deploy/bootstrap/lib.sh "
        "ensure_npu_egress_policy (make test does)"
    )


def host_targets(docker_engine, listener) -> list[tuple[str, int]]:
    hosts = host_addresses(docker_engine)
    addresses = [hosts.npu_gateway, *hosts.own]
    return [(address, port) for address in addresses for port in (listener.port, 5432, 6379)]


def test_node_without_network_reaches_no_host_service_and_no_outside_address(
    sandbox, docker_engine, host_listener
):
    targets = [*LOCAL_SERVICES, *host_targets(docker_engine, host_listener), ("1.1.1.1", 443)]
    tried = sandbox.attack(CONNECT, {"targets": targets})
    assert tried.state == "succeeded", tried.error
    reached = tried.outputs["value"]
    # 127.0.0.1 is the NPU's own loopback, where nothing listens; there is no other route.
    assert {reached[f"{host}:{port}"] for host, port in LOCAL_SERVICES} == {errno.ECONNREFUSED}
    others = {result for target, result in reached.items() if not target.startswith("127.")}
    assert others == {errno.ENETUNREACH}, reached
    assert host_listener.peers == []


def test_node_without_network_cannot_resolve_names(sandbox):
    resolved = sandbox.attack(RESOLVE)
    assert resolved.state == "succeeded", resolved.error
    assert isinstance(resolved.outputs["value"], str), resolved.outputs
    assert resolved.outputs["value"].startswith("gaierror")


@pytest.mark.parametrize("network", [False, True], ids=["without-network", "with-network"])
def test_raw_and_packet_sockets_cannot_be_opened(sandbox, network):
    tried = sandbox.attack(RAW_SOCKETS, network=network)
    assert tried.state == "succeeded", tried.error
    # runc: no CAP_NET_RAW (EPERM). runsc: gVisor passing sockets to the kernel has
    # no raw sockets at all (EAFNOSUPPORT).
    refusals = {errno.EPERM, errno.EACCES} if runtime() == "runc" else {errno.EPERM, errno.EAFNOSUPPORT}
    assert set(tried.outputs["value"].values()) <= refusals, tried.outputs


def test_node_with_network_reaches_no_service_on_the_host(sandbox, docker_engine, host_listener, policy):
    targets = [*LOCAL_SERVICES, *host_targets(docker_engine, host_listener)]
    tried = sandbox.attack(CONNECT, {"targets": targets}, network=True)
    assert tried.state == "succeeded", tried.error
    reached = tried.outputs["value"]
    assert {reached[f"{host}:{port}"] for host, port in LOCAL_SERVICES} == {errno.ECONNREFUSED}
    # The NPU bridge's gateway and every other address of this host refuse the NPU.
    others = {result for target, result in reached.items() if not target.startswith("127.")}
    assert others == {errno.EHOSTUNREACH}, reached
    assert host_listener.peers == []


def test_node_with_network_reaches_no_private_or_metadata_address(sandbox, docker_engine, policy):
    hosts = host_addresses(docker_engine)
    targets = [("169.254.169.254", 80), ("10.0.0.1", 80), ("172.16.0.1", 80), ("192.168.0.1", 80),
               ("100.64.0.1", 80)]  # fmt: skip
    if hosts.default_gateway:
        targets.append((hosts.default_gateway, 80))  # the host's router
    tried = sandbox.attack(CONNECT, {"targets": targets}, network=True)
    assert tried.state == "succeeded", tried.error
    assert set(tried.outputs["value"].values()) == {errno.EHOSTUNREACH}, tried.outputs


def test_node_with_network_still_reaches_the_public_internet_by_name(sandbox, policy):
    # The policy must not be a blanket ban: network access means the internet.
    resolved = sandbox.attack(RESOLVE, network=True)
    assert resolved.state == "succeeded", resolved.error
    addresses = resolved.outputs["value"]
    assert isinstance(addresses, list), addresses
    assert addresses
    tried = sandbox.run_node(CONNECT, {"targets": [(addresses[0], 443)]}, network=True)
    assert tried.outputs["value"] == {f"{addresses[0]}:443": "connected"}


CONNECT_IPV6 = node_code(
    """
import socket
value = {'addresses': [], 'reached': {}}
with open('/proc/net/if_inet6') as listed:
    value['addresses'] = [(line.split()[5], line.split()[0]) for line in listed if line.strip()]
interface = socket.if_nametoindex('eth0')
for host, port in node.get_inputs()['targets']:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect((host, port, 0, interface if host.startswith('fe80') else 0))
        value['reached'][f'[{host}]:{port}'] = 'connected'
    except socket.timeout:
        value['reached'][f'[{host}]:{port}'] = 'timeout'
    except OSError as exc:
        value['reached'][f'[{host}]:{port}'] = exc.errno
    finally:
        sock.close()
"""
)
# What a connection over IPv6 may meet: no address or route at all, or the policy's reject.
IPV6_REFUSALS = {errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EHOSTUNREACH, errno.EACCES}


def eui64_link_local(mac: str) -> str:
    """The link-local address an interface with hardware address ``mac`` takes."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    words = [octets[0] << 8 | octets[1], octets[2] << 8 | 0xFF,
             0xFE << 8 | octets[3], octets[4] << 8 | octets[5]]  # fmt: skip
    return "fe80::" + ":".join(f"{word:x}" for word in words)


def host_ipv6_targets(port: int) -> list[tuple[str, int]]:
    """This host's IPv6 addresses (global and link-local) and the NPU bridge's
    link-local address (the one it has once an NPU is attached), on ``port``."""
    listed = subprocess.run(["ip", "-6", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    addresses = {line.split()[3].split("/")[0] for line in listed.stdout.splitlines()} - {"::1"}
    bridge, _ = npu_bridge(docker.from_env())
    mac = Path(f"/sys/class/net/{bridge}/address")
    if mac.exists():
        addresses.add(eui64_link_local(mac.read_text().strip()))
    return [(address, port) for address in sorted(addresses)]


@pytest.fixture
def ipv6_listener():
    """A TCP listener on every IPv6 address of this host: a connection that reaches it
    is an NPU that reached the host over IPv6."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_node_with_network_has_no_ipv6_and_the_host_rejects_it_from_the_bridge(
    sandbox, ipv6_listener, policy
):
    # The worker's own check (node_runner/egress_policy.py) finds the ip6tables half of
    # the policy; the node finds no IPv6 address to use, and reaches nothing with it.
    verdict = check_egress_policy(docker.from_env())
    assert verdict.in_place, verdict.problems
    port = int(ipv6_listener.getsockname()[1])
    targets = [*host_ipv6_targets(port), ("2606:4700:4700::1111", 443), ("64:ff9b::a9fe:a9fe", 80)]
    tried = sandbox.attack(CONNECT_IPV6, {"targets": targets}, network=True)
    assert tried.state == "succeeded", tried.error
    probed = tried.outputs["value"]
    assert [name for name, _ in probed["addresses"] if name != "lo"] == [], probed["addresses"]
    assert set(probed["reached"].values()) <= IPV6_REFUSALS, probed["reached"]
    with pytest.raises(BlockingIOError):
        ipv6_listener.accept()
