"""Readings of the Docker stats API become samples like `docker stats` shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from node_runner.resource_sampler import npu_sample

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def reading(*, usage=2_000_000_000, pre_usage=1_500_000_000, system=20_000_000_000,
            pre_system=19_000_000_000, cpus=2, memory=300 * 2**20, inactive=20 * 2**20,
            networks=None):  # fmt: skip
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": usage}, "system_cpu_usage": system, "online_cpus": cpus},
        "precpu_stats": {"cpu_usage": {"total_usage": pre_usage}, "system_cpu_usage": pre_system},
        "memory_stats": {"usage": memory, "limit": 512 * 2**20, "stats": {"inactive_file": inactive}},
        "pids_stats": {"current": 3},
    }
    if networks is not None:
        stats["networks"] = networks
    return stats


def test_cpu_is_a_percentage_of_one_cpu_and_memory_excludes_the_page_cache():
    sample = npu_sample(reading(), AT)
    # The container used 0.5 s of CPU while the host's 2 CPUs together ran 1 s (0.5 s
    # of wall time): one whole CPU.
    assert sample.cpu_percent == 100.0
    assert sample.memory_bytes == 280 * 2**20
    assert sample.memory_limit_bytes == 512 * 2**20
    assert sample.pids == 3
    assert sample.at == AT


def test_a_quarter_cpu_quota_reads_about_twenty_five_percent():
    sample = npu_sample(reading(usage=1_750_000_000, pre_usage=1_500_000_000, system=21_000_000_000,
                                pre_system=19_000_000_000), AT)  # fmt: skip
    assert sample.cpu_percent == 25.0


def test_network_bytes_are_summed_over_interfaces_and_absent_without_a_network():
    networks = {"eth0": {"rx_bytes": 1000, "tx_bytes": 10}, "eth1": {"rx_bytes": 5, "tx_bytes": 1}}
    sample = npu_sample(reading(networks=networks), AT)
    assert (sample.net_rx_bytes, sample.net_tx_bytes) == (1005, 11)
    without = npu_sample(reading(), AT)
    assert (without.net_rx_bytes, without.net_tx_bytes) == (None, None)


def test_the_first_reading_has_no_cpu_figure():
    stats = reading()
    stats["precpu_stats"] = {"cpu_usage": {"total_usage": 0}}
    assert npu_sample(stats, AT).cpu_percent is None


def test_cgroup_v1_page_cache_is_also_excluded():
    stats = reading()
    stats["memory_stats"]["stats"] = {"total_inactive_file": 100 * 2**20}
    assert npu_sample(stats, AT).memory_bytes == 200 * 2**20


def test_the_empty_reading_of_a_stopped_container_is_no_sample():
    assert npu_sample({"read": "0001-01-01T00:00:00Z", "memory_stats": {}, "cpu_stats": {}}, AT) is None
