"""Resource samples of real NPUs, from the Docker stats API through a real worker:
CPU near the node's quota, memory a node allocates, network bytes it downloads."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.integration.conftest import (
    host_server_for_npus,
    node_code,
    nodes_of,
    single_node_run,
    wait_for_run,
)
from trace_monitor.models import NodeExecution, ResourceSample, TraceEvent

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 2**20


def samples_of(run):
    return list(ResourceSample.objects.filter(run=run, node_id="n").order_by("at"))


def finished(run):
    run = wait_for_run(run)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    return run


@pytest.mark.exclusive
def test_a_cpu_burning_node_shows_cpu_samples_near_its_quota(celery_worker):
    burn = node_code(
        "import time\nend = time.monotonic() + 4\nwhile time.monotonic() < end:\n    pass\nvalue = 'burnt'"
    )
    run = finished(single_node_run(burn, "cpu burn", cpus=0.5, timeout_s=30))
    cpu = [sample.cpu_percent for sample in samples_of(run) if sample.cpu_percent is not None]
    assert len(cpu) >= 2, samples_of(run)
    # A quota of half a CPU: `docker stats` shows about 50 %.
    assert 30 <= statistics.median(cpu) <= 60, cpu
    assert max(cpu) <= 65, cpu
    execution = NodeExecution.objects.get(run=run, node_id="n")
    assert execution.cpu_percent_max == max(cpu)
    assert execution.outcome == "succeeded"
    median = statistics.median(cpu)
    print(f"figures: quota 50 %, {len(cpu)} CPU samples, median {median:.1f} %, max {max(cpu):.1f} %")


def test_a_node_that_allocates_200_mb_shows_it_in_its_memory_samples(celery_worker):
    allocate = node_code(
        "import time\n"
        "data = bytearray(200 * 1024 * 1024)\n"
        "for i in range(0, len(data), 4096):\n"
        "    data[i] = 1  # touch every page, so it is resident\n"
        "time.sleep(3)\n"
        "value = len(data)"
    )
    run = finished(single_node_run(allocate, "memory", memory_mb=512, timeout_s=30))
    memory = [sample.memory_bytes for sample in samples_of(run)]
    assert memory, "no sample"
    assert max(memory) >= 200 * MiB, [m // MiB for m in memory]
    assert max(memory) < 400 * MiB, [m // MiB for m in memory]
    assert {sample.memory_limit_bytes for sample in samples_of(run)} == {512 * MiB}
    assert NodeExecution.objects.get(run=run, node_id="n").memory_bytes_max == max(memory)
    print(f"figures: {len(memory)} memory samples, max {max(memory) / MiB:.1f} MiB of a 512 MiB limit")


PAYLOAD = b"x" * (20 * MiB)


class _Payload(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def payload_url() -> Iterator[str]:
    """A local HTTP server serving 20 MiB to NPUs."""
    with host_server_for_npus(_Payload) as url:
        yield f"{url}/payload"


def test_a_node_that_downloads_from_a_local_server_shows_network_bytes(celery_worker, payload_url):
    download = node_code(
        "import time, urllib.request\n"
        f"data = urllib.request.urlopen({payload_url!r}, timeout=20).read()\n"
        "time.sleep(2.5)  # so that a sample is taken after the download\n"
        "value = len(data)"
    )
    run = finished(single_node_run(download, "download", network=True, timeout_s=60))
    assert nodes_of(run)["n"].outputs == {"value": len(PAYLOAD)}
    received = [sample.net_rx_bytes for sample in samples_of(run)]
    assert received, "no sample"
    assert None not in received, received
    assert received[-1] >= len(PAYLOAD), received
    assert received == sorted(received), "network counters only grow"
    assert NodeExecution.objects.get(run=run, node_id="n").net_rx_bytes == received[-1]
    print(f"figures: {len(received)} network samples, {received[-1] / MiB:.2f} MiB received of 20 MiB sent")


def test_a_node_without_network_has_no_network_figures(celery_worker):
    run = finished(single_node_run(node_code("import time\ntime.sleep(2.5)\nvalue = 1"), "offline"))
    samples = samples_of(run)
    assert samples, "a 2.5 s node is sampled"
    assert {(s.net_rx_bytes, s.net_tx_bytes) for s in samples} == {(None, None)}
    started = TraceEvent.objects.get(run=run, kind="started")
    assert started.data["container_id"] == NodeExecution.objects.get(run=run).container_id
    assert started.data["worker"] == celery_worker.name
