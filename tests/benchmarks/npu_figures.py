"""Issue 14's figures: a dedicated NPU driven directly (its start and round trip, split
into their parts, beside the floor of the attach stream they travel on), and issue 14's
Targets table, whose rows carry what bounds each figure, from the same run.

Recorded by test_engine's measurements through ``record_npu``; written by ``report``
after the engine's own sections (figures.report)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.benchmarks import figures
from tests.benchmarks.figures import CONTAINER_LABEL, HOT, WARM, Section, p_ms, ratio, value_of
from tests.benchmarks.npu_driver import EchoMoments, ExecutionMoments
from tests.benchmarks.report import Row, cell, markdown_table, print_table, write_section
from tests.benchmarks.timings import NodeTimeline, ms, percentile

RUNTIMES = ("runc", "runsc")
# The targets are set for the default runtime; gVisor's figures are shown beside them.
TARGET_RUNTIME = "runc"


@dataclass(frozen=True)
class Target:
    name: str
    bound: float
    unit: str


NPU_START = Target("npu_start_p50_ms", 3.0, "ms")
NPU_ROUND_TRIP = Target("npu_roundtrip_p50_ms", 5.0, "ms")
CHAIN_WARM_VS_CONTAINER = Target("chain40_warm_vs_container", 0.5, "")

HOST_PARTS: tuple[tuple[str, Callable[[ExecutionMoments], float]], ...] = (
    ("NPU start: job sent -> the node's first line", lambda m: m.start_s),
    ("NPU round trip: job sent -> result received", lambda m: m.round_trip_s),
    (
        "part: sent -> the execution's runtime is up (stdin, the server's read and fork, job read, "
        "isolation, output capture)",
        lambda m: m.to_runtime_s,
    ),
    ("part: runtime up -> the node's first line (parse and compile its code)", lambda m: m.runtime_to_code_s),
    ("part: the node's main(), fibo(10)", lambda m: m.node_s),
    (
        "part: main() returned -> result frame written (check the result, stop capturing)",
        lambda m: m.result_out_s,
    ),
    (
        "part: result frame written -> the runner has it (the server's relay, attach stream, reader thread)",
        lambda m: m.result_back_s,
    ),
    ("the server's `spawned` at the runner (sent -> forked -> back)", lambda m: m.spawned - m.sent),
    ("after the result: the server's cleanup until `exited` (off the round trip)", lambda m: m.cleanup_s),
)
FAULTS_ROW = (
    "inside the NPU: page faults until the node's first line x one copy-on-write fault's cost (an estimate)"
)
PROBE_PARTS = (
    ("fork_ms", "inside the NPU: fork of an execution -> the child's first instruction"),
    ("seccomp_ms", "inside the NPU: install the execution's seccomp filter"),
    ("threads_ms", "inside the NPU: start and end two threads (output capture has two)"),
    ("compile_ms", "inside the NPU: parse and compile the node's code"),
)
FLOOR_PARTS: tuple[tuple[str, Callable[[EchoMoments], float]], ...] = (
    ("attach stream floor: in (host -> a process in a container as hardened)", lambda e: e.in_s),
    ("attach stream floor: out", lambda e: e.out_s),
    ("attach stream floor: round trip (the baseline)", lambda e: e.round_trip_s),
)


def record_npu(
    runtime: str,
    executions: list[ExecutionMoments],
    parts: list[dict[str, float]],
    floor: list[EchoMoments],
    failure: str | None = None,
) -> None:
    figures.record(f"npu {runtime}", executions=executions, parts=parts, floor=floor, failure=failure)


@dataclass(frozen=True)
class Driven:
    executions: list[ExecutionMoments]
    parts: list[dict[str, float]]
    floor: list[EchoMoments]
    failure: str | None


def _driven(runtime: str) -> Driven:
    name = f"npu {runtime}"
    return Driven(
        executions=value_of(name, "executions") or [],
        parts=value_of(name, "parts") or [],
        floor=value_of(name, "floor") or [],
        failure=value_of(name, "failure"),
    )


def _faults_s(probe: dict[str, float]) -> float:
    """The time an execution spends in the page faults it takes before its code runs,
    priced at what one copy-on-write fault of a fresh fork costs in the NPU."""
    return probe["faults_before_code"] * probe["copy_on_write_us"] / 1e6


def _p50(values: Sequence[float]) -> float | None:
    return percentile(values, 50) if values else None


def _runtime_rows(runtime: str) -> list[Row]:
    driven = _driven(runtime)
    executions, parts, floor = driven.executions, driven.parts, driven.floor
    baseline = _p50([e.round_trip_s for e in floor])
    series = [
        *((name, [part(m) for m in executions]) for name, part in HOST_PARTS),
        # A sandbox that counts no page faults (gVisor reports none) gets no estimate.
        (FAULTS_ROW, [_faults_s(probe) for probe in parts if probe["faults_before_code"] > 0]),
        *((name, [probe[key] / 1000 for probe in parts]) for key, name in PROBE_PARTS),
        *((name, [floor_part(e) for e in floor]) for name, floor_part in FLOOR_PARTS),
    ]
    rows: list[Row] = [
        (runtime, name, len(values), p_ms(values, 50), p_ms(values, 99), ratio(_p50(values), baseline))
        for name, values in series
        if values
    ]
    if driven.failure:
        rows.append((runtime, f"not measured: {driven.failure[:300]}", 0, "—", "—", "—"))
    return rows


def _npu_section() -> Section | None:
    rows = [row for runtime in RUNTIMES for row in _runtime_rows(runtime)]
    if not rows:
        return None
    jobs = len(_driven(TARGET_RUNTIME).executions)
    text = [
        "One dedicated NPU driven directly, without Celery, the database or a pipeline "
        "(tests/benchmarks/npu_driver.py): a container started as the runner starts one "
        "(`npu_container_options`, `start_npu`, default limits, no network), wrapped in the runner's "
        f"`NpuConnection`, given {jobs} fibo(10) jobs one at a time after a warm-up, each once the server "
        "has reported the previous one cleaned up (as the next execution of a node waits for its slot). "
        "The node's first line and the end of its main() read the clock inside the NPU; the runtime's "
        "`started` and `result` frames carry their own time; the runner's moments are taken as its "
        "thread reads the execution's queue. A container shares the host's clock (gVisor's sandbox "
        "follows it). The `inside the NPU` rows come from a probe node run in the same NPU afterwards "
        "(a fork of the server, as every execution is). The baseline: a line sent to a process in a "
        "container with the same hardening, over the same kind of attach stream, which writes it back "
        "with the moment it read it. runc is the default runtime; gVisor (`runsc`, registered with the "
        "engine) is shown beside it, not as a target.",
    ]
    columns = ("runtime", "figure", "n", "p50 ms", "p99 ms", "p50 / attach round trip")
    return "Dedicated NPU: start and round trip, driven directly (runc and gVisor)", text, columns, rows


# -- targets --------------------------------------------------------------------------------


def _start_bound(
    executions: list[ExecutionMoments], parts: list[dict[str, float]], floor: list[EchoMoments]
) -> str:
    start = _p50([m.start_s for m in executions])
    if start is None:
        return "—"
    to_runtime = _p50([m.to_runtime_s for m in executions]) or 0.0
    to_code = _p50([m.runtime_to_code_s for m in executions]) or 0.0
    inbound = _p50([e.in_s for e in floor]) or 0.0
    probe = {key: (_p50([p[key] / 1000 for p in parts]) or 0.0) for key, _ in PROBE_PARTS}  # seconds
    rest = to_runtime - inbound - probe["fork_ms"] - probe["seccomp_ms"] - probe["threads_ms"]
    faults = _p50([p["faults_before_code"] for p in parts]) or 0.0
    fault_us = _p50([p["copy_on_write_us"] for p in parts]) or 0.0
    return (
        f"p50s, ms: attach stream in {ms(inbound):.2f} + fork {ms(probe['fork_ms']):.2f} + seccomp "
        f"{ms(probe['seccomp_ms']):.2f} + capture threads {ms(probe['threads_ms']):.2f} + the rest of "
        f"the execution's setup (the server's read, job read and parse, isolation) {ms(rest):.2f} = "
        f"runtime up {ms(to_runtime):.2f}; then parse and compile the node {ms(to_code):.2f} (compile "
        f"alone {ms(probe['compile_ms']):.2f}). Spread over both: {faults:.0f} page faults before the "
        f"first line, {fault_us:.2f} µs per copy-on-write fault, ≈ {faults * fault_us / 1000:.2f} ms"
    )


def _round_trip_bound(executions: list[ExecutionMoments], floor: list[EchoMoments]) -> str:
    if not executions:
        return "—"
    parts = [
        ("start", [m.start_s for m in executions]),
        ("fibo(10)", [m.node_s for m in executions]),
        ("result written", [m.result_out_s for m in executions]),
        ("result back to the runner", [m.result_back_s for m in executions]),
    ]
    shown = " + ".join(f"{name} {ms(_p50(values) or 0.0):.2f}" for name, values in parts)
    floor_rt = _p50([e.round_trip_s for e in floor])
    beside = f"; the attach stream's own round trip {ms(floor_rt):.2f}" if floor_rt is not None else ""
    return f"p50s, ms: {shown}{beside}"


def _chain_bound(timelines: list[NodeTimeline], warm_s: float | None, container_s: float | None) -> str:
    if not timelines or warm_s is None:
        return "—"
    per_node = [
        ("Celery hop", [t.celery_hop_s for t in timelines]),
        ("claim", [t.claim_commit_s for t in timelines]),
        ("NPU's own time", [t.container_s for t in timelines]),
        ("outcome and next dispatch", [t.outcome_s for t in timelines]),
    ]
    shown = " + ".join(f"{name} {ms(_p50(values) or 0.0):.0f}" for name, values in per_node)
    nodes = len({t.node_id for t in timelines})
    against = f" against {container_s:.1f} s" if container_s is not None else ""
    return f"warm chain {warm_s:.1f} s{against}; per node ({nodes} nodes), p50s, ms: {shown}"


def _verdict(value: float | None, target: Target) -> tuple[str, str]:
    if value is None:
        return "not measured in this run", "—"
    return f"{cell(value)} {target.unit}".strip(), "met" if value <= target.bound else "missed"


def _targets() -> list[Row]:
    driven = _driven(TARGET_RUNTIME)
    executions, parts, floor = driven.executions, driven.parts, driven.floor
    start = _p50([m.start_s for m in executions])
    round_trip = _p50([m.round_trip_s for m in executions])
    warm_walls, container_walls = value_of(HOT, "chain_walls_s"), value_of(WARM, "chain_walls_s")
    warm_s = statistics.median(warm_walls) if warm_walls else None
    container_s = statistics.median(container_walls) if container_walls else None
    chain_ratio = warm_s / container_s if warm_s is not None and container_s else None
    rows: list[tuple[Target, float | None, str]] = [
        (NPU_START, ms(start) if start is not None else None, _start_bound(executions, parts, floor)),
        (
            NPU_ROUND_TRIP,
            ms(round_trip) if round_trip is not None else None,
            _round_trip_bound(executions, floor),
        ),
        (
            CHAIN_WARM_VS_CONTAINER,
            chain_ratio,
            _chain_bound(value_of(HOT, "chain_timelines") or [], warm_s, container_s),
        ),
    ]
    return [
        (target.name, f"<= {target.bound:g} {target.unit}".strip(), *_verdict(value, target), bound)
        for target, value, bound in rows
    ]


def report() -> None:
    head = figures.header()
    section = _npu_section()
    if section is not None:
        figures.write_generated_section("npu start and round trip", head, section)
    targets = _targets()
    columns = ("target", "bound", "measured", "verdict", "what bounds it (this run)")
    print_table("Targets (issue 14)", columns, targets)
    write_section(
        "npu targets",
        [
            "## Targets (issue 14): dedicated NPUs",
            "",
            head,
            "",
            f"Generated from the figures above, measured in the same run, on {TARGET_RUNTIME}. "
            "`npu_start_p50_ms` and `npu_roundtrip_p50_ms`: the dedicated NPU driven directly; "
            "`chain40_warm_vs_container`: the median wall time of the 40-node chain on dedicated NPUs, "
            f"warm, divided by the same chain with `{CONTAINER_LABEL}`. A benchmark never fails on a "
            "target; the last column splits each figure into its parts.",
            "",
            *markdown_table(columns, targets),
        ],
    )
