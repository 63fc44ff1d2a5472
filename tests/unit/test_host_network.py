"""The host's network rate a worker reports: physical interfaces only, per second
between two heartbeats, never negative."""

from __future__ import annotations

from types import SimpleNamespace

from node_runner.heartbeat import NetworkRate, host_interfaces

VIRTUAL = ["lo", "docker0", "veth1a2b", "fk-flowkit-npu"]


def counters(**nics: tuple[int, int]) -> dict[str, SimpleNamespace]:
    return {nic: SimpleNamespace(bytes_recv=rx, bytes_sent=tx) for nic, (rx, tx) in nics.items()}


def test_only_physical_interfaces_count_on_a_host():
    assert host_interfaces(["lo", "eth0", "docker0", "veth1a2b", "ens5"], VIRTUAL) == {"eth0", "ens5"}


def test_in_a_container_every_interface_but_loopback_counts():
    assert host_interfaces(["lo", "eth0"], ["lo", "eth0"]) == {"eth0"}


def test_the_rate_is_bytes_per_second_since_the_last_reading_and_ignores_virtual_traffic():
    rate = NetworkRate()
    assert rate.read(10.0, counters(eth0=(1000, 500), lo=(10**9, 10**9)), VIRTUAL) == (0.0, 0.0)
    later = counters(eth0=(5000, 1500), lo=(2 * 10**9, 2 * 10**9), docker0=(10**6, 10**6))
    assert rate.read(12.0, later, VIRTUAL) == (2000.0, 500.0)


def test_an_interface_that_went_away_never_gives_a_negative_rate():
    rate = NetworkRate()
    rate.read(0.0, counters(eth0=(1000, 1000), eth1=(9000, 9000)), VIRTUAL)
    assert rate.read(1.0, counters(eth0=(1100, 1200)), VIRTUAL) == (0.0, 0.0)
    assert rate.read(2.0, counters(eth0=(1300, 1200)), VIRTUAL) == (200.0, 0.0)


def test_a_reading_at_the_same_instant_gives_no_rate():
    rate = NetworkRate()
    rate.read(5.0, counters(eth0=(0, 0)), VIRTUAL)
    assert rate.read(5.0, counters(eth0=(100, 100)), VIRTUAL) == (0.0, 0.0)
