import { describe, expect, it } from "vitest";
import {
  displayState,
  nodeMatches,
  freshEvents,
  initialMonitorState,
  MAX_LOG_LINES,
  mergeLogs,
  monitorReducer,
  timelineOf,
  type MonitorState,
  type NodeView,
  type RunFrame,
  type TraceEvent,
} from "./runState";

const AT = "2026-11-22T22:00:00+00:00";

function node(nodeId: string, state = "pending"): NodeView {
  return {
    node_id: nodeId,
    state,
    attempt: 0,
    reused: false,
    reason: "",
    inputs: null,
    outputs: null,
    next_nodes: null,
    status_message: "",
    error: null,
    dropped_log_lines: 0,
    started_at: null,
    finished_at: null,
    worker: "",
  };
}

function snapshot(seq: number, nodes: NodeView[], runState = "running"): RunFrame {
  return {
    type: "snapshot",
    seq,
    run: {
      id: "r1",
      pipeline_id: "p1",
      pipeline: "demo",
      version: 1,
      state: runState,
      reason: "",
      rerun_from: null,
      created_at: AT,
      started_at: AT,
      finished_at: null,
    },
    nodes,
  };
}

function event(
  seq: number,
  kind: string,
  nodeId: string | null,
  data: Record<string, unknown> = {},
): TraceEvent {
  return { seq, kind, node_id: nodeId, attempt: 1, at: AT, data };
}

function apply(state: MonitorState, ...frames: RunFrame[]): MonitorState {
  return monitorReducer(state, { type: "frames", frames });
}

const started = apply(initialMonitorState, snapshot(3, [node("a", "queued"), node("b")]));

describe("freshEvents", () => {
  it("drops what was seen and stops at a gap", () => {
    const events = [event(2, "log", "a"), event(3, "log", "a"), event(4, "log", "a"), event(6, "log", "a")];
    const { fresh, gap } = freshEvents(2, events);
    expect(fresh.map((e) => e.seq)).toEqual([3, 4]);
    expect(gap).toBe(true);
  });

  it("accepts a contiguous batch", () => {
    expect(freshEvents(0, [event(1, "log", "a"), event(2, "log", "a")])).toEqual({
      fresh: [event(1, "log", "a"), event(2, "log", "a")],
      gap: false,
    });
  });
});

describe("monitorReducer", () => {
  it("starts from the snapshot and its sequence number", () => {
    expect(started.lastSeq).toBe(3);
    expect(started.nodes.a.state).toBe("queued");
    expect(started.run?.state).toBe("running");
  });

  it("applies transitions in order and carries outputs and errors", () => {
    const state = apply(started, {
      type: "events",
      events: [
        event(4, "running", "a", { source: "queued", target: "running" }),
        event(5, "succeeded", "a", {
          source: "running",
          target: "succeeded",
          outputs: { out: 2 },
          next_nodes: [],
          status_message: "doubled",
          reused: false,
        }),
        event(6, "queued", "b", { source: "pending", target: "queued" }),
        event(7, "running", "b", { source: "queued", target: "running" }),
        event(8, "failed", "b", { source: "running", target: "failed", error: { message: "boom" } }),
        event(9, "run", null, { source: "running", target: "failed", reason: "node b failed" }),
      ],
    });
    expect(state.lastSeq).toBe(9);
    expect(state.nodes.a).toMatchObject({
      state: "succeeded",
      outputs: { out: 2 },
      status_message: "doubled",
    });
    expect(state.nodes.b).toMatchObject({ state: "failed", error: { message: "boom" } });
    expect(state.run).toMatchObject({ state: "failed", reason: "node b failed", finished_at: AT });
  });

  it("shows why a queued node waits for a worker, until it runs", () => {
    const reason = "waiting for a worker with capability gpu: none is online";
    const waiting = apply(started, {
      type: "events",
      events: [event(4, "waiting", "a", { reason, requires: ["gpu"] })],
    });
    expect(waiting.nodes.a).toMatchObject({ state: "queued", reason });
    const running = apply(waiting, {
      type: "events",
      events: [event(5, "running", "a", { source: "queued", target: "running" })],
    });
    expect(running.nodes.a).toMatchObject({ state: "running", reason: "" });
  });

  it("ignores events it has seen, so a reconnect that overlaps changes nothing", () => {
    const once = apply(started, {
      type: "events",
      events: [event(4, "running", "a", { target: "running" })],
    });
    const twice = apply(once, { type: "events", events: [event(4, "paused", "a", { target: "paused" })] });
    expect(twice).toBe(once);
  });

  it("marks a gap and applies nothing past it", () => {
    const state = apply(started, {
      type: "events",
      events: [
        event(4, "running", "a", { target: "running" }),
        event(6, "succeeded", "a", { target: "succeeded" }),
      ],
    });
    expect(state.nodes.a.state).toBe("running");
    expect(state.lastSeq).toBe(4);
    expect(state.gapAfter).toBe(4);
    const resumed = apply(state, {
      type: "events",
      events: [event(5, "log", "a", { message: "x" }), event(6, "succeeded", "a", { target: "succeeded" })],
    });
    expect(resumed.gapAfter).toBeNull();
    expect(resumed.nodes.a.state).toBe("succeeded");
  });

  it("keeps log lines per node with a marker where lines were dropped", () => {
    const state = apply(started, {
      type: "events",
      events: [
        event(4, "log", "a", { level: "info", message: "hello", stream: "stdout" }),
        event(5, "logs_dropped", "a", { lines: 10, bytes: 100 }),
      ],
    });
    expect(state.logs.a.map((line) => line.message)[0]).toBe("hello");
    expect(state.logs.a[1].dropped).toEqual({ lines: 10, bytes: 100 });
    expect(state.nodes.a.dropped_log_lines).toBe(10);
  });

  it("merges logs loaded from the API with live ones without duplicates", () => {
    const live = apply(started, { type: "events", events: [event(4, "log", "a", { message: "live" })] });
    const loaded = monitorReducer(live, {
      type: "logs",
      nodeId: "a",
      events: [event(2, "log", "a", { message: "old" }), event(4, "log", "a", { message: "live" })],
    });
    expect(loaded.logs.a.map((line) => line.message)).toEqual(["old", "live"]);
  });

  it("caps the log lines it keeps", () => {
    const lines = Array.from({ length: MAX_LOG_LINES + 5 }, (_, i) => ({
      seq: i + 1,
      attempt: 1,
      at: AT,
      level: "info",
      stream: "",
      message: String(i),
    }));
    const merged = mergeLogs([], lines);
    expect(merged).toHaveLength(MAX_LOG_LINES);
    expect(merged[0].message).toBe("5");
  });

  it("builds the timeline from started and finished events and the API", () => {
    let state = monitorReducer(started, {
      type: "timeline",
      executions: [
        {
          node_id: "b",
          attempt: 1,
          worker: "w",
          started_at: "2026-11-22T22:00:05+00:00",
          finished_at: null,
          duration_s: null,
          outcome: "",
        },
      ],
    });
    state = apply(state, {
      type: "events",
      events: [
        event(4, "started", "a", { worker: "w1" }),
        event(5, "finished", "a", { outcome: "succeeded", duration_s: 1.5 }),
      ],
    });
    const timeline = timelineOf(state.executions);
    expect(timeline.map((e) => e.node_id)).toEqual(["a", "b"]);
    expect(timeline[0]).toMatchObject({
      worker: "w1",
      outcome: "succeeded",
      duration_s: 1.5,
      finished_at: AT,
    });
    expect(state.nodes.a.worker).toBe("w1");
  });

  it("keeps resource samples per node in time order, once each", () => {
    const sample = (at: string, cpu: number) => ({
      node_id: "a",
      attempt: 1,
      at,
      cpu_percent: cpu,
      memory_bytes: 1000,
      memory_limit_bytes: null,
      net_rx_bytes: null,
      net_tx_bytes: null,
      pids: 1,
    });
    let state = apply(started, { type: "samples", samples: [sample("2026-11-22T22:00:02Z", 20)] });
    state = monitorReducer(state, {
      type: "resources",
      nodeId: "a",
      samples: [sample("2026-11-22T22:00:01Z", 10), sample("2026-11-22T22:00:02Z", 20)],
    });
    expect(state.samples.a.map((s) => s.cpu_percent)).toEqual([10, 20]);
  });

  it("shows reused nodes as reused", () => {
    const state = apply(started, {
      type: "events",
      events: [event(4, "succeeded", "a", { target: "succeeded", reused: true, outputs: {} })],
    });
    expect(displayState(state.nodes.a)).toBe("reused");
    expect(displayState(state.nodes.b)).toBe("pending");
  });

  it("a retry clears the previous attempt's error", () => {
    let state = apply(started, { type: "events", events: [event(4, "error", "a", { message: "flaky" })] });
    expect(state.nodes.a.error?.message).toBe("flaky");
    state = apply(state, {
      type: "events",
      events: [{ ...event(5, "retry", "a", { target: "queued" }), attempt: 2 }],
    });
    expect(state.nodes.a).toMatchObject({ state: "queued", attempt: 2, error: null });
  });
});

describe("nodeMatches", () => {
  it("matches every word against the id, label and state", () => {
    expect(nodeMatches("", "n1", "Fetch", "running")).toBe(true);
    expect(nodeMatches("fetch RUN", "n1", "Fetch", "running")).toBe(true);
    expect(nodeMatches("fetch failed", "n1", "Fetch", "running")).toBe(false);
    expect(nodeMatches("n12_7", "n12_7", "Step 12.7", "succeeded")).toBe(true);
  });
});
