"""An NPU container is created locked down: no privileges, no network, no host files, hard limits."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from control_unit.limits import LIMIT_BOUNDS, LimitError, NodeLimits
from node_runner.container_spec import npu_container_options


def options_for(limits: NodeLimits | None = None, labels: dict[str, str] | None = None) -> dict:
    return npu_container_options(
        image="flowkit/npu:test",
        limits=limits or NodeLimits.defaults(),
        labels=labels if labels is not None else {"flowkit.test_run": "42"},
        runtime="runsc",
        network_name="flowkit-npu",
    )


def ulimits_by_name(options: dict) -> dict[str, tuple[int, int]]:
    return {ulimit.name: (ulimit.soft, ulimit.hard) for ulimit in options["ulimits"]}


# --- Privileges ---------------------------------------------------------------------------------


def test_the_node_runs_as_an_unprivileged_numeric_user():
    assert options_for()["user"] == "10001:10001"


def test_every_capability_is_dropped_and_none_added():
    options = options_for()

    assert options["cap_drop"] == ["ALL"]
    assert not options.get("cap_add")


def test_the_container_is_not_privileged_and_cannot_gain_privileges():
    options = options_for()

    assert options["privileged"] is False
    assert "no-new-privileges:true" in options["security_opt"]


def npu_profile() -> dict:
    profiles = [opt for opt in options_for()["security_opt"] if opt.startswith("seccomp=")]
    assert len(profiles) == 1
    return json.loads(profiles[0].removeprefix("seccomp="))


def test_the_npu_seccomp_profile_denies_by_default():
    profile = npu_profile()

    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not any("unconfined" in opt for opt in options_for()["security_opt"])


def test_the_npu_seccomp_profile_allows_no_process_inspection_and_no_io_uring():
    allowed = {name for rule in npu_profile()["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
               for name in rule["names"]}  # fmt: skip

    for name in ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
                 "io_uring_setup", "io_uring_enter", "io_uring_register"):  # fmt: skip
        assert name not in allowed, name


def test_the_npu_seccomp_profile_keeps_what_the_fork_server_and_multiprocessing_use():
    rules = npu_profile()["syscalls"]
    plain = [rule for rule in rules if not rule.get("args") and not rule.get("includes")]
    unconditional = {name for rule in plain if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}

    for name in ("fork", "vfork", "execve", "wait4", "waitid", "futex", "socketpair", "splice", "prctl",
                 "seccomp", "pidfd_open", "pidfd_send_signal", "memfd_create", "mmap", "openat",
                 "setsid", "kill", "rt_sigaction", "clone"):  # fmt: skip
        assert name in unconditional or name == "clone", name
    # clone is allowed without namespace flags only (Docker's rule, kept).
    clones = [rule for rule in npu_profile()["syscalls"] if rule["names"] == ["clone"]]
    assert any(rule["action"] == "SCMP_ACT_ALLOW" and rule["args"] for rule in clones)


def test_dev_shm_has_a_small_size_of_its_own():
    assert options_for()["shm_size"] == 16 * 1024 * 1024


def test_the_runtime_is_the_one_asked_for():
    assert options_for()["runtime"] == "runsc"


# --- File system --------------------------------------------------------------------------------


def test_the_root_file_system_is_read_only():
    assert options_for()["read_only"] is True


def test_only_tmp_is_writable_and_it_is_a_noexec_nosuid_tmpfs_of_the_configured_size():
    limits = replace(NodeLimits.defaults(), tmpfs_mb=32)
    tmpfs = options_for(limits)["tmpfs"]
    flags = tmpfs["/tmp"].split(",")

    assert list(tmpfs) == ["/tmp"]
    assert "noexec" in flags
    assert "nosuid" in flags
    assert "nodev" in flags
    assert "size=32m" in flags


def test_no_host_path_is_mounted_into_the_container():
    options = options_for()

    assert not options.get("volumes")
    assert not options.get("mounts")
    assert "binds" not in options
    assert "volumes_from" not in options
    assert "devices" not in options


def test_no_environment_variable_is_passed_in():
    assert options_for()["environment"] == {}


def test_container_output_is_never_written_to_a_host_log():
    assert options_for()["log_config"].type == "none"


# --- Network ------------------------------------------------------------------------------------


def test_the_network_is_off_by_default():
    options = options_for()

    assert NodeLimits.defaults().network is False
    assert options["network_mode"] == "none"


def test_a_node_that_asks_for_network_gets_the_npu_network_only():
    limits = NodeLimits.from_overrides({"network": True})

    assert options_for(limits)["network_mode"] == "flowkit-npu"


# --- Resources ----------------------------------------------------------------------------------


def test_memory_and_memory_plus_swap_are_the_same_so_there_is_no_swap():
    limits = replace(NodeLimits.defaults(), memory_mb=300)
    options = options_for(limits)

    assert options["mem_limit"] == "300m"
    assert options["memswap_limit"] == options["mem_limit"]


@pytest.mark.parametrize(
    ("cpus", "nano_cpus"), [(1.0, 1_000_000_000), (0.5, 500_000_000), (2.25, 2_250_000_000)]
)
def test_nano_cpus_come_from_the_cpus_limit(cpus, nano_cpus):
    limits = replace(NodeLimits.defaults(), cpus=cpus)

    assert options_for(limits)["nano_cpus"] == nano_cpus


def test_the_process_count_is_limited_and_under_gvisor_leaves_room_for_the_sandbox():
    limits = replace(NodeLimits.defaults(), pids=17)
    runc = npu_container_options(
        image="flowkit/npu:test", limits=limits, labels={}, runtime="runc", network_name="flowkit-npu"
    )

    assert runc["pids_limit"] == 17
    # gVisor's own threads and per-process stubs share the cgroup: 96 + 2 x 17.
    assert options_for(limits)["pids_limit"] == 130


def test_file_size_open_files_and_core_dumps_are_limited():
    ulimits = ulimits_by_name(options_for())

    assert set(ulimits) == {"fsize", "nofile", "core"}
    assert ulimits["core"] == (0, 0)
    assert ulimits["fsize"][0] == ulimits["fsize"][1] > 0
    assert ulimits["nofile"][0] == ulimits["nofile"][1] > 0


# --- Labels and stdin ---------------------------------------------------------------------------


def test_labels_mark_the_container_as_an_npu_and_keep_the_given_labels():
    labels = options_for(labels={"flowkit.test_run": "42", "flowkit.node": "n-1"})["labels"]

    assert labels == {"flowkit.role": "npu", "flowkit.test_run": "42", "flowkit.node": "n-1"}


def test_without_extra_labels_the_role_label_is_still_set():
    labels = options_for(labels={})["labels"]

    assert labels == {"flowkit.role": "npu"}


def test_the_job_travels_on_stdin_without_a_tty():
    options = options_for()

    assert options["stdin_open"] is True
    assert options["tty"] is False
    assert options["image"] == "flowkit/npu:test"


# --- NodeLimits.from_overrides ------------------------------------------------------------------


def test_no_overrides_give_the_defaults():
    assert NodeLimits.from_overrides(None) == NodeLimits.defaults()
    assert NodeLimits.from_overrides({}) == NodeLimits.defaults()


def test_overrides_within_bounds_are_applied_with_the_right_types():
    limits = NodeLimits.from_overrides({"timeout_s": 5, "memory_mb": 512.0, "cpus": 2, "pids": 100})

    assert (limits.timeout_s, limits.memory_mb, limits.cpus, limits.pids) == (5.0, 512, 2.0, 100)
    assert isinstance(limits.memory_mb, int)
    assert isinstance(limits.pids, int)
    assert isinstance(limits.timeout_s, float)


@pytest.mark.parametrize("name", ["gpus", "flood_bytes", "max_output_bytes", "tmpfs_mb"])
def test_an_unknown_or_internal_limit_is_refused_by_name(name):
    with pytest.raises(LimitError, match=rf"unknown limit\(s\): {name}$"):
        NodeLimits.from_overrides({name: 1})


def test_several_unknown_limits_are_all_named():
    with pytest.raises(LimitError, match=r"unknown limit\(s\): a, b$"):
        NodeLimits.from_overrides({"b": 1, "a": 2})


@pytest.mark.parametrize("name", sorted(LIMIT_BOUNDS))
def test_a_value_below_or_above_its_bounds_is_refused_naming_the_limit(name):
    low, high = LIMIT_BOUNDS[name]

    for value in (low / 2 if low > 0 else -1, high * 2):
        with pytest.raises(LimitError, match=rf"^limit {name} must be between {low:g} and {high:g}"):
            NodeLimits.from_overrides({name: value})


@pytest.mark.parametrize("name", sorted(LIMIT_BOUNDS))
def test_the_bounds_themselves_are_allowed(name):
    low, high = LIMIT_BOUNDS[name]

    assert getattr(NodeLimits.from_overrides({name: low}), name) == pytest.approx(low, abs=1)
    assert getattr(NodeLimits.from_overrides({name: high}), name) == pytest.approx(high)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(LimitError, match=r"^limit cpus must be between"):
        NodeLimits.from_overrides({"cpus": value})


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_accepted_as_a_number(value):
    with pytest.raises(LimitError, match=rf"^limit pids must be a number, got {value}$"):
        NodeLimits.from_overrides({"pids": value})


@pytest.mark.parametrize("value", ["2", None, [1], {"v": 1}])
def test_a_non_number_is_refused_naming_the_limit(value):
    with pytest.raises(LimitError, match=r"^limit memory_mb must be a number"):
        NodeLimits.from_overrides({"memory_mb": value})


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_network_must_be_a_real_boolean(value):
    with pytest.raises(LimitError, match=r"^limit network must be true or false"):
        NodeLimits.from_overrides({"network": value})
