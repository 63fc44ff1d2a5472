"""Hostile code plants symlinks and path-like names where a host might read or
write its results. The runner takes results only from the NPU's stdout and never
touches the NPU's files, so nothing planted there can redirect a host write."""

from __future__ import annotations

from tests.security.conftest import marker_path, node_code


def plant_symlinks(host_path: str) -> str:
    return node_code(
        f"""
import os, time
value = {{}}
for link, target in [('/tmp/result.json', '/etc/shadow'), ('/tmp/outputs', '/'),
                     ('/tmp/docker.sock', '/var/run/docker.sock'), ('/tmp/marker', '{host_path}')]:
    os.symlink(target, link)
# Write through the link: inside the NPU this lands in the NPU's own /tmp.
with open('/tmp/marker', 'w') as handle:
    handle.write('written through a planted symlink')
value['marker_inside'] = os.path.exists('{host_path}')
time.sleep(2)
"""
    ).replace(
        "return [], {'value': value}", "return [], {'value': value, '../../../../tmp/x': 1, '/etc/passwd': 2}"
    )


def test_symlinks_planted_in_the_npu_lead_nowhere_on_the_host(sandbox):
    host_path = marker_path("symlink")
    bystander = sandbox.start_bystander()
    started = sandbox.start(plant_symlinks(str(host_path)))
    npu = sandbox.npu_of(started)
    # From the host, while the links exist: the NPU shares no file or directory with
    # the host, so there is nothing a link could point the host at.
    inspected = sandbox.engine.api.inspect_container(npu.id)
    assert inspected["Mounts"] == []
    assert not inspected["HostConfig"]["Binds"]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert set(inspected["HostConfig"]["Tmpfs"]) == {"/tmp"}
    planted = sandbox.finish(started, wait_s=60)
    assert planted.state == "succeeded", planted.error
    outputs = planted.outputs
    assert outputs["value"] == {"marker_inside": True}
    # Path-like port names stay names: stored as data, nothing created from them.
    assert outputs["../../../../tmp/x"] == 1
    assert outputs["/etc/passwd"] == 2
    assert not host_path.exists()
    sandbox.assert_execution_left_nothing(planted)
    sandbox.assert_bystander_unaffected(bystander)
    sandbox.assert_worker_still_serves()
