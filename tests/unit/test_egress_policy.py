"""The worker's check of the host's NPU egress policy, on listings of the firewall's
rules (the rule reader is the seam: the integration case reads the real firewall)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import override_settings

from node_runner.egress_policy import (
    EgressPolicyGuard,
    EgressPolicyMissing,
    check_egress_policy,
    rule_problems,
)

BRIDGE = "fk-flowkit-npu"
IPV4 = f"""-P INPUT ACCEPT
-N DOCKER-USER
-N FLOWKIT-NPU-EGRESS
-N FLOWKIT-NPU-INPUT
-A INPUT -i {BRIDGE} -j FLOWKIT-NPU-INPUT
-A DOCKER-USER -i {BRIDGE} -j FLOWKIT-NPU-EGRESS
-A DOCKER-USER -j RETURN
-A FLOWKIT-NPU-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A FLOWKIT-NPU-EGRESS -d 10.0.0.0/8 -j REJECT --reject-with icmp-admin-prohibited
-A FLOWKIT-NPU-EGRESS -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited
-A FLOWKIT-NPU-EGRESS -d 172.16.0.0/12 -j REJECT --reject-with icmp-admin-prohibited
-A FLOWKIT-NPU-EGRESS -d 192.168.0.0/16 -j REJECT --reject-with icmp-admin-prohibited
-A FLOWKIT-NPU-EGRESS -j RETURN
-A FLOWKIT-NPU-INPUT -j REJECT --reject-with icmp-admin-prohibited
"""
IPV6 = f"""-P INPUT ACCEPT
-N FLOWKIT-NPU-EGRESS
-N FLOWKIT-NPU-INPUT
-A INPUT -i {BRIDGE} -j FLOWKIT-NPU-INPUT
-A FORWARD -i {BRIDGE} -j FLOWKIT-NPU-EGRESS
-A FLOWKIT-NPU-EGRESS -j REJECT --reject-with icmp6-adm-prohibited
-A FLOWKIT-NPU-INPUT -j REJECT --reject-with icmp6-adm-prohibited
"""


def without(listing: str, fragment: str) -> str:
    kept = [line for line in listing.splitlines() if fragment not in line]
    assert len(kept) < len(listing.splitlines()), fragment
    return "\n".join(kept)


def test_the_policy_as_the_bootstrap_installs_it_is_in_place():
    assert rule_problems(IPV4, IPV6, BRIDGE) == []


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "named"),
    [
        (without(IPV4, "-A INPUT -i"), IPV6, "INPUT does not send traffic"),
        (without(IPV4, "-A DOCKER-USER -i"), IPV6, "DOCKER-USER does not send traffic"),
        (without(IPV4, "169.254.0.0/16"), IPV6, "does not reject 169.254.0.0/16"),
        (without(IPV4, "-A FLOWKIT-NPU-INPUT"), IPV6, "FLOWKIT-NPU-INPUT does not end by rejecting"),
        (IPV4, without(IPV6, "-A FORWARD -i"), "ip6tables: FORWARD does not send traffic"),
        (IPV4, without(IPV6, "-A FLOWKIT-NPU-EGRESS -j"), "ip6tables: FLOWKIT-NPU-EGRESS does not reject"),
        (IPV4, "-P INPUT ACCEPT\n", "ip6tables: no FLOWKIT-NPU-INPUT chain"),
    ],
    ids=[
        "input-jump",
        "forward-jump",
        "metadata",
        "input-reject",
        "ipv6-forward",
        "ipv6-reject",
        "ipv6-none",
    ],
)
def test_each_missing_part_is_named(ipv4, ipv6, named):
    problems = rule_problems(ipv4, ipv6, BRIDGE)
    assert any(named in problem for problem in problems), problems


def test_rules_for_another_bridge_do_not_count():
    assert rule_problems(IPV4, IPV6, "fk-other") != []


def test_a_host_without_ipv6_needs_only_the_ipv4_rules():
    assert rule_problems(IPV4, None, BRIDGE) == []


@dataclass
class Network:
    name: str
    id: str = "0123456789abcdef"
    attrs: dict[str, Any] = field(default_factory=dict)


class Networks:
    def __init__(self, *networks: Network) -> None:
        self.networks = networks

    def list(self, names: list[str]) -> list[Network]:
        return [network for network in self.networks if network.name in names]


class Engine:
    def __init__(self, *networks: Network) -> None:
        self.networks = Networks(*networks)


def reader(ipv4: str | None, ipv6: str | None):
    def read(family: str) -> tuple[str | None, str]:
        listing = ipv4 if family == "iptables" else ipv6
        return listing, "" if listing is not None else "permission denied"

    return read


def test_a_network_with_ipv6_on_is_a_missing_policy():
    on = Network("flowkit-npu", attrs={"EnableIPv6": True, "Options": {}})
    verdict = check_egress_policy(Engine(on), reader(IPV4.replace(BRIDGE, "br-0123456789ab"), IPV6))
    assert verdict.bridge == "br-0123456789ab"
    assert "the NPU network has IPv6 enabled" in verdict.problems


def test_rules_that_cannot_be_read_are_a_missing_policy():
    verdict = check_egress_policy(Engine(), reader(None, IPV6))
    assert not verdict.in_place
    assert "could not be read (permission denied)" in verdict.problems[0]


def test_the_guard_refuses_network_until_the_policy_appears():
    listings = {"ipv4": "", "ipv6": ""}
    guard = EgressPolicyGuard(read=lambda family: (listings["ipv4" if family == "iptables" else "ipv6"], ""),
                              recheck_s=0)  # fmt: skip
    with pytest.raises(EgressPolicyMissing, match=r"network access refused.*fk-flowkit-npu"):
        guard.require(Engine())
    listings.update(ipv4=IPV4, ipv6=IPV6)
    guard.require(Engine())


def test_the_guard_trusts_a_deployment_that_enforces_egress_itself():
    guard = EgressPolicyGuard(read=reader("", ""))
    with override_settings(FLOWKIT_NPU_EGRESS_CHECK=False):
        guard.require(Engine())
