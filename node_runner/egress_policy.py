"""The host's egress policy for NPUs with network access, as the worker checks it.

The policy itself lives in the host's firewall (``ensure_npu_egress_policy`` in
deploy/bootstrap/lib.sh): from the NPU bridge, everything addressed to the host is
rejected (``INPUT`` → ``FLOWKIT-NPU-INPUT``), and forwarded traffic to private,
link-local and the host's own networks too (``DOCKER-USER`` → ``FLOWKIT-NPU-EGRESS``);
over IPv6 everything from the bridge is rejected (``INPUT`` and ``FORWARD``). A
``network: true`` node on a host without it would reach PostgreSQL, Redis, the cloud
metadata address and the LAN, so the worker looks for those rules when it starts,
and again at most every ``RECHECK_S`` before it runs such a node, and refuses the
node (``EgressPolicyMissing``) while they are not there.

The rules are read in the Docker engine's network namespace (where the bridge is),
which need not be the worker's own (tests/integration/hosts.py runs workers in
namespaces of their own). A worker that cannot read them (no root, or in a container
without the host's firewall) finds the policy missing; ``FLOWKIT_NPU_EGRESS_CHECK=false``
says that the deployment enforces egress some other way, and the check is skipped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.signals import celeryd_after_setup
from django.conf import settings

from control_unit.limits import LimitError
from node_runner.docker_engine import engine

log = logging.getLogger(__name__)

INPUT_CHAIN = "FLOWKIT-NPU-INPUT"
EGRESS_CHAIN = "FLOWKIT-NPU-EGRESS"
# Addresses every IPv4 policy must reject: the cloud metadata range and the private ones.
MUST_REJECT_V4 = ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
REJECT_ALL_V6 = ["-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"]
RECHECK_S = 30.0
ENGINE_PIDFILE = Path("/var/run/docker.pid")

# (family, "iptables -S" text or None when it could not be read, and why).
RuleReader = Callable[[str], tuple[str | None, str]]


class EgressPolicyMissing(LimitError):
    """``network: true`` cannot be granted: the host's egress policy is not in place."""


@dataclass(frozen=True)
class EgressVerdict:
    bridge: str
    problems: tuple[str, ...]

    @property
    def in_place(self) -> bool:
        return not self.problems


def chain_problems(rules: str, bridge: str, family: str, hook: str, chain: str) -> list[str]:
    """What is missing of ``chain`` and its jump from ``hook`` for traffic in from
    ``bridge``, in the ``iptables -S`` listing ``rules``."""
    lines = [line.split() for line in rules.splitlines()]
    if ["-N", chain] not in lines:
        return [f"{family}: no {chain} chain"]
    if ["-A", hook, "-i", bridge, "-j", chain] not in lines:
        return [f"{family}: {hook} does not send traffic from {bridge} to {chain}"]
    return []


def chain_rules(rules: str, chain: str) -> list[list[str]]:
    return [line.split()[2:] for line in rules.splitlines() if line.startswith(f"-A {chain} ")]


def rule_problems(ipv4: str, ipv6: str | None, bridge: str) -> list[str]:
    """Every part of the policy missing from the listings (``ipv6`` None: the host has
    no IPv6, so there is nothing to reject)."""
    problems = chain_problems(ipv4, bridge, "iptables", "INPUT", INPUT_CHAIN)
    problems += chain_problems(ipv4, bridge, "iptables", "DOCKER-USER", EGRESS_CHAIN)
    if (chain_rules(ipv4, INPUT_CHAIN) or [[]])[-1][:2] != ["-j", "REJECT"]:
        problems.append(f"iptables: {INPUT_CHAIN} does not end by rejecting")
    egress = chain_rules(ipv4, EGRESS_CHAIN)
    rejected = {rule[1] for rule in egress if rule[:1] == ["-d"] and "REJECT" in rule}
    problems += [f"iptables: {EGRESS_CHAIN} does not reject {cidr}" for cidr in MUST_REJECT_V4
                 if cidr not in rejected]  # fmt: skip
    if ipv6 is not None:
        for hook, chain in (("INPUT", INPUT_CHAIN), ("FORWARD", EGRESS_CHAIN)):
            found = chain_problems(ipv6, bridge, "ip6tables", hook, chain)
            if not found and chain_rules(ipv6, chain) != [REJECT_ALL_V6]:
                found = [f"ip6tables: {chain} does not reject everything"]
            problems += found
    return problems


def engine_network_namespace() -> str | None:
    """The network namespace of the Docker engine, when this worker can see it and it
    is not the worker's own."""
    try:
        pid = int(ENGINE_PIDFILE.read_text().strip())
        theirs = os.readlink(f"/proc/{pid}/ns/net")
    except (OSError, ValueError):
        return None
    try:
        return None if theirs == os.readlink("/proc/self/ns/net") else f"/proc/{pid}/ns/net"
    except OSError:
        return None


def read_host_rules(family: str) -> tuple[str | None, str]:
    """``family -S`` (iptables or ip6tables), run where the NPU bridge is."""
    command = [family, "-S"]
    namespace = engine_network_namespace()
    if namespace:
        command = ["nsenter", f"--net={namespace}", *command]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{family} could not run: {exc}"
    if listed.returncode != 0:
        return None, f"{family} -S failed: {listed.stderr.strip()[:200]}"
    return listed.stdout, ""


def host_has_ipv6() -> bool:
    return Path("/proc/net/if_inet6").exists()


def npu_bridge(client: Any) -> tuple[str, bool]:
    """The NPU network's bridge interface and whether the network has IPv6 on. A
    network not created yet will get FlowKit's fixed bridge name."""
    from node_runner.npu_execution import npu_bridge_name  # npu_execution imports this module

    name = settings.FLOWKIT_NPU_NETWORK
    for network in client.networks.list(names=[name]):
        if network.name != name:
            continue
        attrs = network.attrs
        bridge = (attrs.get("Options") or {}).get("com.docker.network.bridge.name")
        return str(bridge or f"br-{network.id[:12]}"), bool(attrs.get("EnableIPv6"))
    return npu_bridge_name(name), False


def check_egress_policy(client: Any, read: RuleReader = read_host_rules) -> EgressVerdict:
    bridge, ipv6_on = npu_bridge(client)
    problems = ["the NPU network has IPv6 enabled"] if ipv6_on else []
    ipv4, why = read("iptables")
    if ipv4 is None:
        return EgressVerdict(bridge, (*problems, f"the IPv4 rules could not be read ({why})"))
    ipv6: str | None = None
    if host_has_ipv6():
        ipv6, why = read("ip6tables")
        if ipv6 is None:
            return EgressVerdict(bridge, (*problems, f"the IPv6 rules could not be read ({why})"))
    return EgressVerdict(bridge, (*problems, *rule_problems(ipv4, ipv6, bridge)))


class EgressPolicyGuard:
    """The worker's last verdict, refreshed at most every ``RECHECK_S`` (so a policy
    installed or removed while the worker runs is seen within that time)."""

    def __init__(self, read: RuleReader = read_host_rules, recheck_s: float = RECHECK_S) -> None:
        self.read = read
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._checked: tuple[float, EgressVerdict] | None = None

    def verdict(self, client: Any) -> EgressVerdict:
        with self._lock:
            now = time.monotonic()
            if self._checked is None or now - self._checked[0] >= self.recheck_s:
                self._checked = (now, check_egress_policy(client, self.read))
            return self._checked[1]

    def require(self, client: Any) -> None:
        """Raise ``EgressPolicyMissing`` unless the policy is in place (or the
        deployment said it enforces egress itself)."""
        if not settings.FLOWKIT_NPU_EGRESS_CHECK:
            return
        verdict = self.verdict(client)
        if not verdict.in_place:
            raise EgressPolicyMissing(
                "network access refused: the host's egress policy for NPUs is not in place "
                f"on bridge {verdict.bridge} ({'; '.join(verdict.problems)}); install it with "
                "ensure_npu_egress_policy from deploy/bootstrap/lib.sh (make up does), or set "
                "FLOWKIT_NPU_EGRESS_CHECK=false where the deployment enforces egress itself"
            )


guard = EgressPolicyGuard()


def require_egress_policy(client: Any) -> None:
    guard.require(client)


@celeryd_after_setup.connect
def _check_at_start(**kwargs: Any) -> None:
    """Checked before the pool starts, so its processes inherit the verdict."""
    if not settings.FLOWKIT_NPU_EGRESS_CHECK:
        log.warning("FLOWKIT_NPU_EGRESS_CHECK is off: network-enabled nodes run unchecked")
        return
    try:
        verdict = guard.verdict(engine())
    except Exception as exc:  # noqa: BLE001 - the engine may be down at start; checked again per node
        log.warning("the NPU egress policy could not be checked at start: %r", exc)
        return
    if verdict.in_place:
        log.info("NPU egress policy in place on %s", verdict.bridge)
    else:
        log.error("NPU egress policy missing on %s: %s; network-enabled nodes will be refused",
                  verdict.bridge, "; ".join(verdict.problems))  # fmt: skip
