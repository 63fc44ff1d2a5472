"""The engine benchmarks' figures: recorded by each measurement, then printed and
written to docs/PERFORMANCE.md as tables beside their baselines, with the issue's
targets marked met or missed. A section whose measurement did not run (or failed)
keeps what the document had, and the Targets table says it was not measured."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import celery
import channels
import daphne
import django
import docker
import redis
from django.conf import settings
from django.db import connection

from tests.benchmarks.report import COMMAND, Row, cell, machine, markdown_table, print_table, write_section
from tests.benchmarks.timings import NodeTimeline, ms, percentile
from tests.benchmarks.workers import POOL_WARM

SOURCE = "tests/benchmarks/test_engine.py"
WARM, DISABLED = "pool warm", "pool disabled"
MIB = 1024 * 1024
# Windmill's public benchmark of the same 40-task chain, on their machine.
PUBLISHED_CHAIN_S = (
    ("Windmill, normal workers (published)", 4.4),
    ("Windmill, dedicated workers (published)", 2.1),
    ("Prefect (published)", 4.9),
    ("Airflow (published)", 116.0),
)

# A document section: its title, its explanation, the table's columns and rows.
Section = tuple[str, list[str], Sequence[str], list[Row]]

_results: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Sizes:
    chain: int
    fan_out: int
    concurrency: int
    trace_chain: int


def record(name: str, **values: Any) -> None:
    _results.setdefault(name, {}).update(values)


def _get(name: str, key: str) -> Any:
    return _results.get(name, {}).get(key)


def _ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "—"
    return f"{value / baseline:.2f}"


def _p(values: Sequence[float], q: float) -> float:
    return ms(percentile(values, q))


def _failures(failures: Sequence[str]) -> list[str]:
    """Nodes that failed during a measurement, said beside the figure they touched."""
    if not failures:
        return []
    shown = "; ".join(f"`{failure[:160]}`" for failure in failures[:3])
    return ["", f"Nodes that failed in this run ({len(failures)}; a failed chain is not counted): {shown}."]


def stack_versions() -> list[str]:
    engine = docker.from_env().version()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    redis_info = cast(dict[str, Any], redis.Redis.from_url(settings.REDIS_URL).info())
    return [
        f"Docker {engine['Version']} ({settings.FLOWKIT_NPU_RUNTIME})",
        f"PostgreSQL {postgres}",
        f"Redis {redis_info['redis_version']}",
        f"Django {django.__version__}",
        f"Celery {celery.__version__}",
        f"Channels {channels.__version__}",
        f"Daphne {daphne.__version__}",
    ]


# -- sections ----------------------------------------------------------------------------


def _dispatch(sizes: Sizes) -> Section | None:
    timelines: dict[str, list[NodeTimeline]] = {
        setting: _get(setting, "chain_timelines")
        for setting in (WARM, DISABLED)
        if _get(setting, "chain_timelines")
    }
    if not timelines:
        return None
    latencies = {setting: [t.dispatch_latency_s for t in items] for setting, items in timelines.items()}
    baseline = latencies.get(DISABLED)
    rows: list[Row] = [
        (
            setting,
            len(values),
            _p(values, 50),
            _p(values, 99),
            _ratio(percentile(values, 50), percentile(baseline, 50) if baseline else None),
            _ratio(percentile(values, 99), percentile(baseline, 99) if baseline else None),
        )
        for setting, values in latencies.items()
    ]
    pool_note = (
        "yes"
        if _get("pool", "pooled_npus_seen")
        else (
            "no — this build has no pool: both rows create an NPU per node, and the difference "
            "between them is the machine's load, which varied during the run"
        )
    )
    text = [
        'From "node ready" (the control unit\'s `queued` trace event: the FCB made the node ready and '
        'dispatched it, in the transaction whose commit sends the Celery task) to "user code '
        "starts\" (the node's first line reads the clock inside the NPU and returns it as an "
        f"output): the nodes of the {sizes.chain}-node fibo(10) chains below, one node at a time, so no node "
        "waits for a free worker slot. One worker started with the pool warm "
        f"(`{' '.join(f'{name}={value}' for name, value in POOL_WARM.env.items())}`; idle pooled NPUs seen: "
        f"{pool_note}) "
        "and one with `FLOWKIT_NPU_POOL_MAX=0` (the baseline: an NPU created per node).",
    ]
    columns = ("setting", "nodes", "p50 ms", "p99 ms", "p50 / disabled", "p99 / disabled")
    return "Dispatch latency: node ready to user code, pool warm and disabled", text, columns, rows


def _chain(sizes: Sizes) -> Section | None:
    floor = _get("docker run", "wall_s")
    prefect = _get("prefect", "walls_s")
    prefect_s = statistics.median(prefect) if prefect else None
    rows: list[Row] = []
    for setting in (WARM, DISABLED):
        walls = _get(setting, "chain_walls_s")
        if walls:
            wall = statistics.median(walls)
            rows.append(
                (f"FlowKit, {setting}", len(walls), wall, _ratio(wall, floor), _ratio(wall, prefect_s))
            )
    if prefect_s is not None:
        name = f"Prefect {_get('prefect', 'version')}, ephemeral server, SQLite"
        rows.append((name, len(prefect), prefect_s, _ratio(prefect_s, floor), "1.00"))
    if floor is not None:
        rows.append(
            (
                f"`docker run --rm -i` x {sizes.chain} (isolation floor)",
                1,
                floor,
                "1.00",
                _ratio(floor, prefect_s),
            )
        )
    if not rows:
        return None
    rows += [(name, "—", seconds, "—", "—") for name, seconds in PUBLISHED_CHAIN_S]
    text = [
        f"{sizes.chain} nodes one after the other, each computing fibo(10) in a fresh NPU (the shape of the "
        "public workflow-engine benchmark in which Windmill published the last four rows, on "
        "their machine, not this one). FlowKit: run start to run succeeded as the FCB stamps "
        "them, the median of the runs. Prefect 3, in its own virtual environment "
        "(~/.cache/flowkit-bench/prefect-venv, installed by the benchmark), the same 40 tasks in "
        "one flow on a local ephemeral API server with SQLite, timed inside the script after an "
        "untimed warm-up flow. The floor: 40 sequential `docker run --rm -i --network none` of the "
        "NPU image, each fed the same fibo(10) job on stdin, nothing of FlowKit around them.",
    ]
    columns = ("engine", "runs", "wall s (median)", "/ docker run floor", "/ Prefect")
    text += _failures([*(_get(WARM, "chain_failures") or []), *(_get(DISABLED, "chain_failures") or [])])
    title = f"{sizes.chain}-node sequential chain of fibo(10): FlowKit, Prefect 3, plain docker run"
    return title, text, columns, rows


def _fan_out(sizes: Sizes) -> Section | None:
    width, concurrency = sizes.fan_out, sizes.concurrency
    rate, churn = _get("fan-out", "per_s"), _get("churn", "per_s")
    if rate is None and churn is None:
        return None
    rows: list[Row] = []
    if rate is not None:
        rows.append((f"FlowKit, {width} trivial nodes, pool warm", rate, _ratio(rate, churn)))
    if churn is not None:
        rows.append((f"Docker engine: create+start+wait+remove, {concurrency} at a time", churn, "1.00"))
    text = [
        f"One source node, then {width} trivial nodes that all become ready when it succeeds; one "
        f"worker of concurrency {concurrency} with the pool warm. Nodes per second from the source's "
        "success to the run's. The baseline, measured in the same run: the Docker engine's raw "
        f"churn with the same concurrency (docker SDK, {width} containers of the NPU image with "
        "FlowKit's hardening options, running `python3 -c pass`).",
    ]
    text += _failures(_get("fan-out", "failures") or [])
    return (
        f"Fan-out: {width} nodes beside the engine's raw container churn",
        text,
        ("what", "per s", "/ raw churn"),
        rows,
    )


def _overhead(sizes: Sizes) -> Section | None:
    rows: list[Row] = []
    for setting in (WARM, DISABLED):
        timelines = _get(setting, "chain_timelines")
        if not timelines:
            continue
        container = [t.container_s for t in timelines]
        for name, part in (
            ("engine overhead", lambda t: t.engine_overhead_s),
            ("part: Celery hop (queued -> claimed)", lambda t: t.celery_hop_s),
            ("part: claim commit, node, secrets (claimed -> inputs)", lambda t: t.claim_commit_s),
            ("part: trace, outcome, next dispatch (finished -> succeeded)", lambda t: t.outcome_s),
            ("container's own time (inputs -> finished)", lambda t: t.container_s),
        ):
            values = [part(t) for t in timelines]
            rows.append(
                (
                    setting,
                    name,
                    _p(values, 50),
                    _p(values, 99),
                    _ratio(percentile(values, 50), percentile(container, 50)),
                )
            )
    if not rows:
        return None
    text = [
        f"Per node of the {sizes.chain}-node chains, from the trace's timestamps (all stamped on "
        "this host by the process that did the step): engine overhead = (queued -> inputs) + (finished -> "
        "succeeded). `queued` is the FCB's dispatch; `running` the worker's claim (Celery's hop and "
        "the claim's row lock); `inputs` is stamped when the runner has loaded the node and "
        "resolved its secrets and is about to take an NPU; `finished` once the NPU is gone and "
        "the outcome known; `succeeded` when the outcome transaction applies it to the FCB (the "
        "same instant dispatches the next node, so result -> next node queued is inside it). "
        "The container's own time (take or create, start, run, remove) is inputs -> finished and "
        "is excluded. Not covered: the commits after `queued` and `succeeded` are stamped (both "
        "stamps are taken at the start of their transaction), a few milliseconds each.",
    ]
    columns = ("setting", "figure", "p50 ms", "p99 ms", "p50 / container p50")
    return "Engine overhead per node, excluding the container's own time", text, columns, rows


def _trace(sizes: Sizes) -> Section | None:
    transitions, execution = _get("trace", "transitions_s"), _get("trace", "execution_s")
    transport = _get("trace", "transport_s")
    if transitions is None:
        return None
    floor = percentile(transport, 50) if transport else None
    rows: list[Row] = [
        (name, len(values), _p(values, 50), _p(values, 99), _ratio(percentile(values, 50), floor))
        for name, values in (
            ("every event", transitions + execution),
            ("of which state changes (FCB transitions)", transitions),
            ("of which runner events (inputs, started, log, outputs, finished)", execution),
            ("transport floor: channel layer -> Daphne -> client", transport),
        )
        if values
    ]
    text = [
        "A real Daphne process serves `/ws/runs/<id>/` to a `websockets` client signed in as a "
        f"viewer, while a warm-pool worker runs a {sizes.trace_chain}-node chain of trivial nodes "
        "that each print a line. Latency = the client's clock when the frame arrives minus the event's `at`, "
        "stamped when the worker (or the control unit inside it) produced the event. State "
        "changes are broadcast when their transaction commits; the runner's own events are "
        "batched and written at most every `FLOWKIT_TRACE_FLUSH_S` "
        f"({settings.FLOWKIT_TRACE_FLUSH_S:g} s), which bounds their latency by design; `inputs`, "
        "stamped before the runner takes an NPU, is written with `started`, once the NPU runs. The "
        "floor: a message put on the run's channel group by the benchmark itself, through Redis "
        "and Daphne, without the database or a worker.",
    ]
    return (
        "Trace latency: worker event to WebSocket client",
        text,
        ("events", "n", "p50 ms", "p99 ms", "p50 / floor"),
        rows,
    )


def _memory(sizes: Sizes) -> Section | None:
    memory = _results.get("memory")
    if not memory:
        return None
    python = memory["python_bytes"]
    rows: list[Row] = [
        ("web process (Daphne), RSS", memory["web_bytes"] / MIB, _ratio(memory["web_bytes"], python)),
        (
            f"worker (main + {sizes.concurrency} children), RSS",
            memory["worker_bytes"] / MIB,
            _ratio(memory["worker_bytes"], python),
        ),
        (
            f"{memory['npu_source']}, cgroup memory",
            memory["npu_bytes"] / MIB,
            _ratio(memory["npu_bytes"], python),
        ),
        ("bare Python interpreter, RSS (baseline)", python / MIB, "1.00"),
    ]
    text = [
        "After the runs above. The worker's figure adds the resident memory of its main process "
        "and its prefork children, so pages they share are counted in each (as `ps` would). The "
        "NPU's is what `docker stats` shows: the container's cgroup memory less its inactive "
        "file cache.",
    ]
    return "Memory", text, ("process", "MiB", "/ bare Python"), rows


# -- targets --------------------------------------------------------------------------------


def _verdict(value: float | None, bound: float, unit: str, at_most: bool = True) -> tuple[str, str]:
    if value is None:
        return "not measured in this run", "—"
    shown = f"{cell(value)} {unit}".strip()
    if (value <= bound) if at_most else (value >= bound):
        return shown, "met"
    missed = f"{cell(value - bound if at_most else bound - value)} {unit}".strip()
    return shown, f"missed by {missed} ({value / bound:.2f} x the target)"


def _targets(sizes: Sizes) -> list[Row]:
    warm = _get(WARM, "chain_timelines") or []
    dispatch = [t.dispatch_latency_s for t in warm]
    overhead = [t.engine_overhead_s for t in warm]
    trace = (_get("trace", "transitions_s") or []) + (_get("trace", "execution_s") or [])
    walls = _get(WARM, "chain_walls_s")
    rate, churn = _get("fan-out", "per_s"), _get("churn", "per_s")
    checks: list[tuple[str, str, Callable[[], tuple[str, str]]]] = [
        (
            "dispatch p50, pool warm",
            "<= 10 ms",
            lambda: _verdict(_p(dispatch, 50) if dispatch else None, 10, "ms"),
        ),
        (
            "dispatch p99, pool warm",
            "<= 50 ms",
            lambda: _verdict(_p(dispatch, 99) if dispatch else None, 50, "ms"),
        ),
        (
            f"{sizes.chain}-node chain, pool warm",
            "<= 2.0 s",
            lambda: _verdict(statistics.median(walls) if walls else None, 2.0, "s"),
        ),
        (
            "fan-out / raw churn",
            ">= 0.9",
            lambda: _verdict(rate / churn if rate and churn else None, 0.9, "", at_most=False),
        ),
        (
            "engine overhead p50, pool warm",
            "<= 5 ms",
            lambda: _verdict(_p(overhead, 50) if overhead else None, 5, "ms"),
        ),
        (
            "trace latency p99, every event",
            "<= 20 ms",
            lambda: _verdict(_p(trace, 99) if trace else None, 20, "ms"),
        ),
    ]
    return [(name, bound, *verdict()) for name, bound, verdict in checks]


def report(sizes: Sizes) -> None:
    versions = stack_versions()
    sections = {
        "engine dispatch": _dispatch(sizes),
        "engine chain": _chain(sizes),
        "engine fan-out": _fan_out(sizes),
        "engine overhead": _overhead(sizes),
        "engine trace latency": _trace(sizes),
        "engine memory": _memory(sizes),
    }
    header = f"Command: `{COMMAND}` ({SOURCE}). {machine(*versions)}"
    for name, section in sections.items():
        if section is None:
            continue
        title, text, columns, rows = section
        print_table(title, columns, rows)
        write_section(name, [f"## {title}", "", header, "", *text, "", *markdown_table(columns, rows)])
    targets = _targets(sizes)
    columns = ("target", "bound", "measured", "verdict")
    print_table("Targets (issue 8)", columns, targets)
    write_section(
        "engine targets",
        [
            "## Targets (issue 8)",
            "",
            header,
            "",
            "Generated from the figures above, measured in the same run. A benchmark never fails on "
            "a target; this table says which are met, and by how much the others are missed.",
            "",
            *markdown_table(columns, targets),
        ],
    )
