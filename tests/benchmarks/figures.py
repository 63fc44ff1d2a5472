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

from tests.benchmarks.fcb_events import SMALL_REPEATS
from tests.benchmarks.report import COMMAND, Row, cell, machine, markdown_table, print_table, write_section
from tests.benchmarks.timings import NodeTimeline, ms, percentile
from tests.benchmarks.workers import DEDICATED_PINNED_MAX, POOL_WARM

SOURCE = "tests/benchmarks/test_engine.py"
# The chains' settings, as recorded: single-use containers on a worker with the pool
# warm or disabled; dedicated NPUs, first and second run, on a worker of one process.
WARM, DISABLED = "pool warm", "pool disabled"
COLD, HOT = "dedicated cold", "dedicated warm"
# Dedicated NPUs on a worker as deployed: two processes, the default bound.
DEFAULTS = "dedicated, worker defaults"
DEFAULTS_WORKER = "worker defaults (2 processes sharing at most FLOWKIT_NPU_DEDICATED_MAX NPUs)"
CHAIN_SETTINGS = (HOT, COLD, WARM, DISABLED)
LABELS = {
    HOT: "dedicated NPUs, warm (second run)",
    COLD: "dedicated NPUs, cold (first run of a new pipeline)",
    WARM: "isolation: container, pool warm",
    DISABLED: "isolation: container, pool disabled",
}
CONTAINER_LABEL = LABELS[WARM]
# The dedicated fan-out, first and second run; the FCB events without a worker.
FAN_OUT_COLD, FAN_OUT_WARM = "dedicated fan-out cold", "dedicated fan-out warm"
FCB_EVENTS = "fcb events"
HAND_OFF = "hand-off"
OVERHEAD_PARTS: tuple[tuple[str, Callable[[NodeTimeline], float]], ...] = (
    ("engine overhead", lambda t: t.engine_overhead_s),
    ("part: Celery hop (queued -> claimed)", lambda t: t.celery_hop_s),
    ("part: claim commit, node, secrets (claimed -> inputs)", lambda t: t.claim_commit_s),
    ("part: trace, outcome, next dispatch (finished -> succeeded)", lambda t: t.outcome_s),
    ("NPU's own time (inputs -> finished)", lambda t: t.container_s),
)
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
    dedicated_fan_out: int


def record(name: str, **values: Any) -> None:
    _results.setdefault(name, {}).update(values)


def value_of(name: str, key: str) -> Any:
    return _results.get(name, {}).get(key)


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "—"
    return f"{value / baseline:.2f}"


def p_ms(values: Sequence[float], q: float) -> float:
    return ms(percentile(values, q))


def failure_lines(failures: Sequence[str]) -> list[str]:
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
        setting: value_of(setting, "chain_timelines")
        for setting in CHAIN_SETTINGS
        if value_of(setting, "chain_timelines")
    }
    if not timelines:
        return None
    latencies = {setting: [t.dispatch_latency_s for t in items] for setting, items in timelines.items()}
    baseline = latencies.get(DISABLED)
    rows: list[Row] = [
        (
            LABELS[setting],
            len(values),
            p_ms(values, 50),
            p_ms(values, 99),
            ratio(percentile(values, 50), percentile(baseline, 50) if baseline else None),
            ratio(percentile(values, 99), percentile(baseline, 99) if baseline else None),
        )
        for setting, values in latencies.items()
    ]
    pool_note = (
        "yes"
        if value_of("pool", "pooled_npus_seen")
        else (
            "no — this build has no pool: both container rows create an NPU per node, and the difference "
            "between them is the machine's load, which varied during the run"
        )
    )
    text = [
        'From "node ready" (the control unit\'s `queued` trace event: the FCB made the node ready and '
        'dispatched it, in the transaction whose commit sends the Celery task) to "user code '
        "starts\" (the node's first line reads the clock inside the NPU and returns it as an "
        f"output): the nodes of the {sizes.chain}-node fibo(10) chains below, one node at a time, so no node "
        "waits for a free worker slot. Dedicated NPUs (the default isolation): a worker pinned to one "
        f"process holding up to {DEDICATED_PINNED_MAX} of them (see the chain's section); cold is the first "
        "run of a freshly saved pipeline (each node adopts an NPU from the warm pool, or starts one), warm "
        "its second run (each node's NPU waits for it). `isolation: container` (a single-use container "
        "per execution), on a worker of two processes started with the pool warm "
        f"(`{' '.join(f'{name}={value}' for name, value in POOL_WARM.env.items())}`; idle pooled NPUs seen: "
        f"{pool_note}) "
        "and one with `FLOWKIT_NPU_POOL_MAX=0` (the baseline: an NPU created per node).",
    ]
    columns = ("setting", "nodes", "p50 ms", "p99 ms", "p50 / container, pool disabled", "p99 / same")
    return (
        "Dispatch latency: node ready to user code, dedicated NPUs and single-use containers",
        text,
        columns,
        rows,
    )


def _chain(sizes: Sizes) -> Section | None:
    floor = value_of("docker run", "wall_s")
    prefect = value_of("prefect", "walls_s")
    prefect_s = statistics.median(prefect) if prefect else None
    container_walls = value_of(WARM, "chain_walls_s")
    container_s = statistics.median(container_walls) if container_walls else None

    def row(name: str, runs: object, wall: float) -> Row:
        return (name, runs, wall, ratio(wall, container_s), ratio(wall, floor), ratio(wall, prefect_s))

    rows: list[Row] = []
    for setting in CHAIN_SETTINGS:
        walls = value_of(setting, "chain_walls_s")
        if walls:
            rows.append(row(f"FlowKit, {LABELS[setting]}", len(walls), statistics.median(walls)))
    reuse = value_of(HOT, "reused")
    defaults = _results.get(DEFAULTS, {})
    if defaults.get("cold_wall_s") is not None:
        rows.append(row(f"FlowKit, dedicated NPUs, {DEFAULTS_WORKER}: cold", 1, defaults["cold_wall_s"]))
    if defaults.get("warm_wall_s") is not None:
        reused_there = f"{defaults['reused']} of {defaults['nodes']} nodes found their NPU"
        rows.append(
            row(
                f"FlowKit, dedicated NPUs, {DEFAULTS_WORKER}: warm ({reused_there})",
                1,
                defaults["warm_wall_s"],
            )
        )
    if prefect_s is not None:
        name = f"Prefect {value_of('prefect', 'version')}, ephemeral server, SQLite"
        rows.append(row(name, len(prefect), prefect_s))
    if floor is not None:
        rows.append(row(f"`docker run --rm -i` x {sizes.chain} (isolation floor)", 1, floor))
    if not rows:
        return None
    rows += [(name, "—", seconds, "—", "—", "—") for name, seconds in PUBLISHED_CHAIN_S]
    reuse_note = (
        f" In the warm runs {sum(r for r, _ in reuse)} of {sum(n for _, n in reuse)} nodes ran in the NPU "
        "their first run had left (the trace's container ids)."
        if reuse
        else ""
    )
    text = [
        f"{sizes.chain} nodes one after the other, each computing fibo(10) (the shape of the public "
        "workflow-engine benchmark in which Windmill published the last four rows, on their machine, not "
        "this one). FlowKit: run start to run succeeded as the FCB stamps them, the median of the runs. "
        "Dedicated NPUs (the default): each node runs in a fresh process of its own long-lived NPU. Cold: "
        "the first run of a freshly saved pipeline, whose nodes each adopt an NPU from the warm pool (or "
        "start one when the pool is empty); warm: the second run of the same version. These rows use a "
        f"worker of one pool process with `FLOWKIT_NPU_DEDICATED_MAX={DEDICATED_PINNED_MAX}` (room for the "
        f"chain's {sizes.chain} nodes).{reuse_note} The worker-defaults rows show the worker as `make up` "
        "starts it: its pool processes share the NPUs its NPU host holds, with the default bound. "
        "`isolation: container`: a single-use container per execution, with the pool warm (two worker "
        "processes, as before issue 14) or disabled. Prefect 3, "
        "in its own virtual environment (~/.cache/flowkit-bench/prefect-venv, installed by the benchmark), "
        f"the same {sizes.chain} tasks in one flow on a local ephemeral API server with SQLite, timed inside "
        "the script after an untimed warm-up flow. The floor: "
        f"{sizes.chain} sequential `docker run --rm -i --network none` of the NPU image, each fed the same "
        "fibo(10) job on stdin (behind the fork server's `run` request), nothing of FlowKit around them.",
    ]
    columns = (
        "engine",
        "runs",
        "wall s (median)",
        "/ container, pool warm",
        "/ docker run floor",
        "/ Prefect",
    )
    text += failure_lines(
        [
            failure
            for setting in (*CHAIN_SETTINGS, DEFAULTS)
            for failure in value_of(setting, "chain_failures") or []
        ]
    )
    title = (
        f"{sizes.chain}-node sequential chain of fibo(10): dedicated NPUs cold and warm, single-use "
        "containers, Prefect 3, plain docker run"
    )
    return title, text, columns, rows


def _fan_out(sizes: Sizes) -> Section | None:
    width, concurrency = sizes.fan_out, sizes.concurrency
    rate, churn = value_of("fan-out", "per_s"), value_of("churn", "per_s")
    if rate is None and churn is None:
        return None
    rows: list[Row] = []
    if rate is not None:
        rows.append(
            (f"FlowKit, {width} trivial nodes, isolation: container, pool warm", rate, ratio(rate, churn))
        )
    if churn is not None:
        rows.append((f"Docker engine: create+start+wait+remove, {concurrency} at a time", churn, "1.00"))
    text = [
        f"One source node, then {width} trivial nodes that all become ready when it succeeds, each with "
        f"`isolation: container` (a single-use container per execution, as this section measured before "
        f"dedicated NPUs); one worker of concurrency {concurrency} with the pool warm. Nodes per second from "
        "the source's success to the run's. The baseline, measured in the same run: the Docker engine's raw "
        f"churn with the same concurrency (docker SDK, {width} containers of the NPU image with "
        "FlowKit's hardening options, running `python3 -c pass`).",
    ]
    text += failure_lines(value_of("fan-out", "failures") or [])
    return (
        f"Fan-out: {width} nodes beside the engine's raw container churn",
        text,
        ("what", "per s", "/ raw churn"),
        rows,
    )


def _dedicated_fan_out(sizes: Sizes) -> Section | None:
    cold, warm = _results.get(FAN_OUT_COLD), _results.get(FAN_OUT_WARM)
    if not cold and not warm:
        return None
    hot = value_of(HOT, "chain_timelines") or []
    per_node = percentile([t.engine_overhead_s + t.container_s for t in hot], 50) if hot else None
    one_at_a_time = 1 / per_node if per_node else None
    rows: list[Row] = [
        (f"FlowKit, {sizes.dedicated_fan_out} trivial nodes, {label}", figures["per_s"], figures["wall_s"],
         ratio(figures["per_s"], one_at_a_time))
        for label, figures in (("dedicated NPUs, cold (first run)", cold), ("dedicated NPUs, warm", warm))
        if figures and figures.get("per_s")
    ]  # fmt: skip
    if one_at_a_time:
        rows.append(("one node at a time: 1 / (engine overhead + NPU's own time), p50 of the warm chain",
                     one_at_a_time, "—", "1.00"))  # fmt: skip
    text = [
        f"One source node, then {sizes.dedicated_fan_out} trivial nodes that all become ready when it "
        "succeeds, on dedicated NPUs (the default), on the worker as `make up` starts it: "
        f"{sizes.concurrency} pool processes sharing the NPUs of their NPU host. Cold: the pipeline's "
        "first run (each leaf adopts an NPU from the pool or starts one); warm: its second run. Nodes per "
        "second from the source's success to the run's. The baseline, from the warm chain measured in the "
        "same run: one node at a time, engine overhead plus the NPU's own time (p50).",
    ]
    text += failure_lines([f for figures in (cold, warm) if figures for f in figures.get("failures") or []])
    return (
        f"Fan-out: {sizes.dedicated_fan_out} trivial nodes on dedicated NPUs",
        text,
        ("what", "nodes per s", "leaves s", "/ one at a time"),
        rows,
    )


def _hand_off(sizes: Sizes) -> Section | None:
    options = _results.get(HAND_OFF)
    if not options:
        return None
    baseline_name = next(iter(options))
    baseline = [t.celery_hop_s for t in options[baseline_name][1]]
    rows: list[Row] = []
    for name, (walls, timelines) in options.items():
        hop = [t.celery_hop_s for t in timelines]
        overhead = [t.engine_overhead_s for t in timelines]
        rows.append(
            (name, len(walls), statistics.median(walls) if walls else "—", p_ms(hop, 50), p_ms(hop, 99),
             p_ms(overhead, 50), ratio(percentile(hop, 50), percentile(baseline, 50)))
        )  # fmt: skip
    text = [
        f"The warm {sizes.chain}-node chain of trivial nodes on a worker of one pool process holding its "
        "dedicated NPUs, under each Celery setting (`FLOWKIT_CELERY_ACKS_LATE`, "
        "`FLOWKIT_CELERY_PREFETCH_MULTIPLIER`): acknowledged when the task ends or when it starts, and how "
        "many tasks each process reserves ahead. The hop is queued -> claimed (the FCB's dispatch to the "
        "worker's claim: commit, broker, the worker's main process, its pool process, the claim's lock). "
        f"The baseline is the first row, the installation's default. Kept: {baseline_name}: the others' "
        "hop differs from it by about as much as two runs of one setting differ (see the notes below), and "
        "acknowledging late keeps a task a worker took but never started in the queue. The database claim "
        "is the lease either way (a redelivered task finds its attempt taken). The pool type stays "
        "prefork: each pool process holds one attempt, and its NPU work runs in the NPU host and the NPU, "
        "not in the pool process.",
    ]
    columns = ("setting", "runs", "wall s (median)", "hop p50 ms", "hop p99 ms", "engine overhead p50 ms",
               "hop p50 / default")  # fmt: skip
    return "Hand-off: Celery acknowledgement and prefetch", text, columns, rows


def _fcb_events(sizes: Sizes) -> Section | None:
    events = _results.get(FCB_EVENTS)
    if not events:
        return None
    small, large = events["small"], events["large"]
    rows: list[Row] = [
        ("claim + outcome of one node, run of 10 nodes (baseline)", len(small), p_ms(small, 50),
         p_ms(small, 99), "1.00"),
        ("claim + outcome of one node, run of 1,000 nodes", len(large), p_ms(large, 50), p_ms(large, 99),
         ratio(percentile(large, 50), percentile(small, 50))),
        ("cancel a run of 10 nodes (baseline)", 1, ms(events["cancel_small_s"]), "—", "1.00"),
        ("cancel a run of 5,000 nodes, 10 of them running", 1, ms(events["cancel_large_s"]), "—",
         ratio(events["cancel_large_s"], events["cancel_small_s"])),
    ]  # fmt: skip
    text = [
        "The control unit alone, on the real PostgreSQL: no broker, no worker, no NPU. A stand-in worker "
        "(tests/integration/layered.py) claims and finishes each node of a layered run (layers of trivial "
        "nodes, each taking the values of two nodes of the layer before) through the control unit's "
        "actions, as the node runner does; each node's claim and outcome is two FCB events, each one "
        "transaction under the run's lock, timed together. The 10-node run (5 layers of 2) runs "
        f"{SMALL_REPEATS} times so both give about as many samples as the 1,000-node run (10 layers of "
        "100). An event reads only the node it is about, its successors and, to decide one, that "
        "successor's upstream nodes (control_unit.fcb), so its cost does not grow with the run. A cancel "
        "changes every unfinished node: its cost grows with them (one transition and one trace event each), "
        "written in a few statements.",
    ]
    return (
        "FCB events: a run of 1,000 nodes beside a run of 10",
        text,
        ("what", "n", "p50 ms", "p99 ms", "p50 / baseline"),
        rows,
    )


def _overhead(sizes: Sizes) -> Section | None:
    rows: list[Row] = []
    for setting in CHAIN_SETTINGS:
        timelines = value_of(setting, "chain_timelines")
        if not timelines:
            continue
        container = [t.container_s for t in timelines]
        for name, part in OVERHEAD_PARTS:
            values = [part(t) for t in timelines]
            rows.append(
                (
                    LABELS[setting],
                    name,
                    p_ms(values, 50),
                    p_ms(values, 99),
                    ratio(percentile(values, 50), percentile(container, 50)),
                )
            )
    if not rows:
        return None
    text = [
        f"Per node of the {sizes.chain}-node chains, from the trace's timestamps (all stamped on "
        "this host by the process that did the step): engine overhead = (queued -> inputs) + (finished -> "
        "succeeded). `queued` is the FCB's dispatch; `running` the worker's claim (Celery's hop and "
        "the claim's row lock); `inputs` is stamped when the runner has loaded the node and "
        "resolved its secrets and is about to take an NPU; `finished` once the outcome is known; "
        "`succeeded` when the outcome transaction applies it to the FCB (the "
        "same instant dispatches the next node, so result -> next node queued is inside it). "
        "The NPU's own time is inputs -> finished and is excluded: for a single-use container, take or "
        "create, start, run (its removal is off the path); for a dedicated NPU, lease it (adopt or start "
        "it, cold), a fresh process, run. Not covered: the commits after `queued` and `succeeded` are "
        "stamped (both stamps are taken at the start of their transaction), a few milliseconds each.",
    ]
    columns = ("setting", "figure", "p50 ms", "p99 ms", "p50 / NPU's own p50")
    return "Engine overhead per node, excluding the NPU's own time", text, columns, rows


def _trace(sizes: Sizes) -> Section | None:
    transitions, execution = value_of("trace", "transitions_s"), value_of("trace", "execution_s")
    transport = value_of("trace", "transport_s")
    if transitions is None:
        return None
    floor = percentile(transport, 50) if transport else None
    rows: list[Row] = [
        (name, len(values), p_ms(values, 50), p_ms(values, 99), ratio(percentile(values, 50), floor))
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
        "that each print a line (dedicated NPUs, the default; the pipeline's first run, so each node adopts "
        "its NPU). Latency = the client's clock when the frame arrives minus the event's `at`, "
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
        ("web process (Daphne), RSS", memory["web_bytes"] / MIB, ratio(memory["web_bytes"], python)),
        (
            f"worker (main + {sizes.concurrency} children + NPU host), RSS",
            memory["worker_bytes"] / MIB,
            ratio(memory["worker_bytes"], python),
        ),
        (
            f"{memory['npu_source']}, cgroup memory",
            memory["npu_bytes"] / MIB,
            ratio(memory["npu_bytes"], python),
        ),
    ]
    dedicated = value_of(HOT, "idle_npu_bytes")
    if dedicated is not None:
        rows.append(
            (
                "a dedicated NPU, idle after its node's two runs, cgroup memory",
                dedicated / MIB,
                ratio(dedicated, python),
            )
        )
    rows.append(("bare Python interpreter, RSS (baseline)", python / MIB, "1.00"))
    text = [
        "After the runs above. The worker's figure adds the resident memory of its main process, "
        "its prefork children and its NPU host, so pages they share are counted in each (as `ps` "
        "would). The NPUs' is what `docker stats` shows: the container's cgroup memory less its "
        "inactive file cache. A dedicated NPU is held per node and worker while its node runs "
        "(let go after `FLOWKIT_NPU_DEDICATED_IDLE_S` without an execution).",
    ]
    return "Memory", text, ("process", "MiB", "/ bare Python"), rows


def write_generated_section(name: str, head: str, section: Section) -> None:
    title, text, columns, rows = section
    print_table(title, columns, rows)
    write_section(name, [f"## {title}", "", head, "", *text, "", *markdown_table(columns, rows)])


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
    """Issue 8's targets, for single-use containers with the pool warm (what they were set
    for) and for dedicated NPUs, warm (which issue 14 made the default)."""
    trace = (value_of("trace", "transitions_s") or []) + (value_of("trace", "execution_s") or [])
    rate, churn = value_of("fan-out", "per_s"), value_of("churn", "per_s")
    rows: list[Row] = []
    for setting in (WARM, HOT):
        timelines = value_of(setting, "chain_timelines") or []
        dispatch = [t.dispatch_latency_s for t in timelines]
        overhead = [t.engine_overhead_s for t in timelines]
        walls = value_of(setting, "chain_walls_s")
        label = LABELS[setting]
        rows += [
            (
                f"dispatch p50, {label}",
                "<= 10 ms",
                *_verdict(p_ms(dispatch, 50) if dispatch else None, 10, "ms"),
            ),
            (
                f"dispatch p99, {label}",
                "<= 50 ms",
                *_verdict(p_ms(dispatch, 99) if dispatch else None, 50, "ms"),
            ),
            (
                f"{sizes.chain}-node chain, {label}",
                "<= 2.0 s",
                *_verdict(statistics.median(walls) if walls else None, 2.0, "s"),
            ),
            (
                f"engine overhead p50, {label}",
                "<= 5 ms",
                *_verdict(p_ms(overhead, 50) if overhead else None, 5, "ms"),
            ),
        ]
    rows += [
        (
            "fan-out / raw churn",
            ">= 0.9",
            *_verdict(rate / churn if rate and churn else None, 0.9, "", at_most=False),
        ),
        (
            "trace latency p99, every event",
            "<= 20 ms",
            *_verdict(p_ms(trace, 99) if trace else None, 20, "ms"),
        ),
    ]
    return rows


def _lean_engine_targets() -> tuple[list[Row], list[str]]:
    """Issue 15's targets, with what bounds each measured miss."""
    timelines = value_of(HOT, "chain_timelines") or []
    overhead = [t.engine_overhead_s for t in timelines]
    walls = value_of(HOT, "chain_walls_s")
    prefect = value_of("prefect", "walls_s")
    chain_s = statistics.median(walls) if walls else None
    prefect_s = statistics.median(prefect) if prefect else None
    fan_out = value_of(FAN_OUT_WARM, "per_s")
    events = _results.get(FCB_EVENTS)
    event_ratio = percentile(events["large"], 50) / percentile(events["small"], 50) if events else None
    rows: list[Row] = [
        ("engine_overhead_p50_ms", "<= 5 ms", *_verdict(p_ms(overhead, 50) if overhead else None, 5, "ms")),
        ("engine_overhead_p99_ms", "<= 25 ms", *_verdict(p_ms(overhead, 99) if overhead else None, 25, "ms")),
        ("chain40_warm_s", "<= 1.0 s", *_verdict(chain_s, 1.0, "s")),
        ("chain40_warm_vs_prefect", "<= 0.5",
         *_verdict(chain_s / prefect_s if chain_s and prefect_s else None, 0.5, "")),
        ("fanout50_nodes_per_s", ">= 100", *_verdict(fan_out, 100, "nodes/s", at_most=False)),
        ("event_cost_1000_vs_10", "<= 1.5", *_verdict(event_ratio, 1.5, "")),
    ]  # fmt: skip
    bounds = []
    if timelines:
        parts = ", ".join(
            f"{name.removeprefix('part: ')} {p_ms([part(t) for t in timelines], 50):.1f} ms"
            for name, part in OVERHEAD_PARTS[1:]
        )
        bounds.append(
            f"Per node of the warm chain, p50: {parts}. The engine overhead is the first three; a node of "
            "the chain costs all four, and the chain's wall is about 40 times their sum."
        )
    fan_out = _results.get(FAN_OUT_WARM) or {}
    used = fan_out.get("cpu")
    if used is not None and fan_out.get("wall_s"):
        per_node_ms = used.busy_s / fan_out["nodes"] * 1000
        parts = ", ".join(f"{name} {cpu_s / fan_out['nodes'] * 1000:.1f} ms" for name, cpu_s in used.top())
        bounds.append(
            f"The warm fan-out used {used.busy_s:.2f} CPU-seconds of the machine's {used.cpus} CPUs: "
            f"{per_node_ms:.1f} ms of CPU per node ({parts}). At that cost {used.cpus} CPUs run at most "
            f"{used.cpus * 1000 / per_node_ms:.0f} nodes a second, whatever the concurrency."
        )
    if events:
        bounds.append(
            f"One FCB event pair (claim + outcome) with no worker: {p_ms(events['small'], 50):.1f} ms p50 in "
            f"a run of 10 nodes, {p_ms(events['large'], 50):.1f} ms in a run of 1,000; cancelling a run of "
            f"5,000 nodes took {events['cancel_large_s']:.2f} s."
        )
    return rows, bounds


def header() -> str:
    """The line under each section's title: the command, where and when."""
    return f"Command: `{COMMAND}` ({SOURCE}). {machine(*stack_versions())}"


def report(sizes: Sizes) -> None:
    sections = {
        "engine dispatch": _dispatch(sizes),
        "engine chain": _chain(sizes),
        "engine fan-out": _fan_out(sizes),
        "engine overhead": _overhead(sizes),
        "engine trace latency": _trace(sizes),
        "engine memory": _memory(sizes),
    }
    head = header()
    for name, section in sections.items():
        if section is not None:
            write_generated_section(name, head, section)
    for name, section in {
        "engine dedicated fan-out": _dedicated_fan_out(sizes),
        "engine fcb events": _fcb_events(sizes),
        "engine hand-off": _hand_off(sizes),
    }.items():
        if section is not None:
            write_generated_section(name, head, section)
    targets = _targets(sizes)
    columns = ("target", "bound", "measured", "verdict")
    lean, bounds = _lean_engine_targets()
    print_table("Targets (issue 15)", columns, lean)
    write_section(
        "engine targets 15",
        [
            "## Targets (issue 15): the lean engine path",
            "",
            head,
            "",
            "Generated from the figures above, measured in the same run: engine overhead and the chain from "
            "the dedicated NPUs' warm chain, the fan-out from its warm run, the event cost from the FCB "
            "events section. What bounds a miss, measured in this run:",
            "",
            *[f"- {line}" for line in bounds],
            "",
            *markdown_table(columns, lean),
        ],
    )
    print_table("Targets (issue 8)", columns, targets)
    write_section(
        "engine targets",
        [
            "## Targets (issue 8)",
            "",
            head,
            "",
            "Generated from the figures above, measured in the same run. A benchmark never fails on "
            "a target; this table says which are met, and by how much the others are missed.",
            "",
            *markdown_table(columns, targets),
        ],
    )
