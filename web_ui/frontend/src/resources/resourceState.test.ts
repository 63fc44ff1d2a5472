import { describe, expect, it } from "vitest";
import {
  idleText,
  initialResourceState,
  npuExecutions,
  npuKey,
  npusByKind,
  poolText,
  recentScaling,
  resourceReducer,
  scalingLine,
  sortedWorkers,
  type Worker,
} from "./resourceState";

function worker(name: string, state = "online", npus: Worker["npus"] = []): Worker {
  return {
    name,
    host: "h",
    pid: 1,
    state,
    concurrency: 2,
    cpu_percent: 10,
    cpu_count: 4,
    memory_used_bytes: 1,
    memory_total_bytes: 2,
    npus,
    started_at: "2026-11-22T22:00:00Z",
    last_seen: "2026-11-22T22:00:00Z",
  };
}

const sample = (at: string, cpu: number) => ({
  run_id: "r",
  node_id: "n",
  attempt: 1,
  at,
  cpu_percent: cpu,
  memory_bytes: 100,
  memory_limit_bytes: 1000,
  net_rx_bytes: 5,
  net_tx_bytes: 6,
  pids: 2,
});

describe("resourceReducer", () => {
  const npu = { container_id: "c1", state: "running", run_id: "r", node_id: "n", attempt: 1 };
  const started = resourceReducer(initialResourceState, {
    type: "snapshot",
    heartbeat_s: 2,
    workers: [worker("w1", "online", [npu]), worker("w0", "stopped")],
    samples: [sample("2026-11-22T22:00:01Z", 50)],
  });

  it("starts from the snapshot", () => {
    expect(sortedWorkers(started).map((w) => w.name)).toEqual(["w1", "w0"]);
    expect(started.latest[npuKey("r", "n", 1)].cpu_percent).toBe(50);
  });

  it("keeps the newest sample of each NPU", () => {
    let state = resourceReducer(started, { type: "samples", samples: [sample("2026-11-22T22:00:03Z", 90)] });
    state = resourceReducer(state, { type: "samples", samples: [sample("2026-11-22T22:00:02Z", 70)] });
    expect(state.latest[npuKey("r", "n", 1)].cpu_percent).toBe(90);
  });

  it("replaces a worker on its heartbeat and keeps samples that came before the heartbeat listing their NPU", () => {
    const early = resourceReducer(
      resourceReducer(initialResourceState, {
        type: "snapshot",
        heartbeat_s: 2,
        workers: [worker("w1")],
        samples: [],
      }),
      { type: "samples", samples: [sample("2026-11-22T22:00:01Z", 40)] },
    );
    const state = resourceReducer(early, {
      type: "worker",
      worker: { ...worker("w1", "online", [npu]), last_seen: "2026-11-22T22:00:02Z" },
    });
    expect(state.workers.w1.npus).toEqual([npu]);
    expect(state.latest[npuKey("r", "n", 1)].cpu_percent).toBe(40);
  });

  it("forgets NPUs that sent nothing for minutes", () => {
    const state = resourceReducer(started, {
      type: "worker",
      worker: { ...worker("w1", "online", []), last_seen: "2026-11-22T23:00:00Z" },
    });
    expect(state.latest).toEqual({});
  });
});

describe("autoscaling", () => {
  const scaled: Worker = {
    ...worker("w"),
    concurrency: 4,
    concurrency_min: 1,
    pool_size: 3,
    queue_depth: 12,
    scaling: [
      { at: "2026-11-22T22:00:01Z", from: 1, to: 2, queue_depth: 5 },
      { at: "2026-11-22T22:00:02Z", from: 2, to: 4, queue_depth: 12 },
      { at: "2026-11-22T22:00:09Z", from: 4, to: 3, queue_depth: 0 },
    ],
  };

  it("says each decision with the queue depth seen then", () => {
    expect(scalingLine(scaled.scaling![1])).toBe("concurrency 2→4 (queue depth 12)");
  });

  it("lists the newest decisions first", () => {
    expect(recentScaling(scaled, 2).map((change) => change.to)).toEqual([3, 4]);
  });

  it("shows the pool size within its bounds, or a fixed pool", () => {
    expect(poolText(scaled)).toBe("3 of 1–4 processes");
    expect(poolText(worker("fixed"))).toBe("2 processes");
  });

  it("sorts draining workers after online ones", () => {
    const state = resourceReducer(initialResourceState, {
      type: "snapshot",
      heartbeat_s: 2,
      workers: [worker("a", "draining"), worker("b", "stopped"), worker("c")],
      samples: [],
    });
    expect(sortedWorkers(state).map((w) => w.name)).toEqual(["c", "a", "b"]);
  });
});

describe("dedicated NPUs", () => {
  const dedicated = (container_id: string, pipeline_name: string, node_id: string) => ({
    container_id,
    state: "idle",
    kind: "dedicated" as const,
    pipeline_id: `p-${pipeline_name}`,
    pipeline_name,
    node_id,
    executions: 2,
    idle_since: "2026-11-22T22:00:00Z",
    memory_bytes: 12_000_000,
    memory_limit_bytes: 256 * 2 ** 20,
  });
  const warm = { container_id: "w1", state: "warm", kind: "pooled" as const };

  it("lists a worker's dedicated NPUs by pipeline and node, apart from its warm and single-use ones", () => {
    const npus = [
      dedicated("c3", "beta", "a"),
      warm,
      dedicated("c2", "alpha", "z"),
      dedicated("c1", "alpha", "b"),
    ];
    const { dedicated: mine, others } = npusByKind(worker("w", "online", npus));
    expect(mine.map((npu) => `${npu.pipeline_name}/${npu.node_id}`)).toEqual([
      "alpha/b",
      "alpha/z",
      "beta/a",
    ]);
    expect(others).toEqual([warm]);
  });

  it("treats NPUs of a worker before dedicated NPUs as other NPUs", () => {
    const old = { container_id: "c", state: "running", run_id: "r", node_id: "n", attempt: 1 };
    expect(npusByKind(worker("w", "online", [old]))).toEqual({ dedicated: [], others: [old] });
  });

  it("names the executions an NPU runs: none while idle, each of a node with concurrency", () => {
    expect(npuExecutions(dedicated("c", "p", "n"))).toEqual([]);
    const busy = { ...dedicated("c", "p", "n"), idle_since: null, run_id: "r1", attempt: 1 };
    expect(npuExecutions(busy)).toEqual([{ run_id: "r1", node_id: "n", attempt: 1 }]);
    const running = [
      { run_id: "r1", node_id: "n", attempt: 1 },
      { run_id: "r2", node_id: "n", attempt: 2 },
    ];
    expect(npuExecutions({ ...busy, running })).toEqual(running);
  });

  it("says how long an NPU has been idle, as of its worker's heartbeat", () => {
    const since = "2026-11-22T22:00:00Z";
    expect(idleText(since, Date.parse("2026-11-22T22:00:42Z"))).toBe("idle 42 s");
    expect(idleText(since, Date.parse("2026-11-22T22:03:30Z"))).toBe("idle 3 min");
    expect(idleText(since, Date.parse("2026-11-23T00:30:00Z"))).toBe("idle 2 h");
    // A heartbeat clock a little behind the counter's: never a negative time.
    expect(idleText(since, Date.parse("2026-11-22T21:59:59Z"))).toBe("idle 0 s");
  });
});
