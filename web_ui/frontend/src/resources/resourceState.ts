// What the resource monitor knows: workers (from heartbeats) and the latest sample
// of each NPU, applied frame by frame from /ws/monitor/. Pure, so it is unit-tested.

import type { Sample } from "../monitor/runState";

/** What an NPU is for (node_runner.heartbeat.NpuKind). */
export type NpuKind = "dedicated" | "pooled" | "single-use" | "test";

/** One execution an NPU runs now. */
export interface NpuExecution {
  run_id: string;
  node_id: string;
  attempt: number;
}

export interface Npu {
  container_id: string;
  // running, paused; "warm" for a pooled one waiting, "idle" for a dedicated one between
  // executions
  state: string;
  kind?: NpuKind; // absent from workers of a version before dedicated NPUs
  run_id?: string | null;
  node_id?: string | null;
  attempt?: number | null;
  // A dedicated NPU's pipeline and node (node_id), and the executions it served (counted
  // every few seconds); a single-use one's pipeline while it executes.
  pipeline_id?: string | null;
  pipeline_name?: string | null;
  executions?: number | null;
  /** Since when it waits; null while it executes. */
  idle_since?: string | null;
  /** Its container's memory (cgroup) at the heartbeat; null where the host does not show it. */
  memory_bytes?: number | null;
  memory_limit_bytes?: number | null;
  /** Every execution it runs, when more than one (a node with concurrency > 1). */
  running?: NpuExecution[];
}

/** One change of a worker's pool size, made by Celery's autoscaler. */
export interface ScalingChange {
  at: string;
  from: number;
  to: number;
  queue_depth: number;
}

export interface Worker {
  name: string;
  host: string;
  pid: number;
  state: string; // online | draining | silent | stopped | lost
  concurrency: number; // the most processes its pool may have
  concurrency_min?: number; // the fewest (autoscaling); 0: a fixed pool
  pool_size?: number;
  queue_depth?: number;
  scaling?: ScalingChange[];
  capabilities?: string[];
  queues?: string[];
  cpu_percent: number | null;
  cpu_count: number | null;
  memory_used_bytes: number | null;
  memory_total_bytes: number | null;
  // The host's physical interfaces, per second between two heartbeats (absent from
  // workers of a version before this field).
  net_rx_bytes_per_s?: number;
  net_tx_bytes_per_s?: number;
  npus: Npu[];
  started_at: string;
  last_seen: string;
}

export type MonitorFrame =
  | { type: "snapshot"; heartbeat_s: number; workers: Worker[]; samples: Sample[] }
  | { type: "worker"; worker: Worker }
  | { type: "samples"; samples: Sample[] };

export interface ResourceState {
  heartbeatS: number;
  workers: Record<string, Worker>;
  /** The latest sample per NPU execution, keyed by npuKey. */
  latest: Record<string, Sample>;
}

export const initialResourceState: ResourceState = { heartbeatS: 2, workers: {}, latest: {} };

export function npuKey(
  runId: string | null | undefined,
  nodeId: string | null | undefined,
  attempt: number | null | undefined,
) {
  return `${runId ?? ""}/${nodeId ?? ""}#${attempt ?? 0}`;
}

function withSamples(latest: Record<string, Sample>, samples: readonly Sample[]): Record<string, Sample> {
  const next = { ...latest };
  for (const sample of samples) {
    const key = npuKey(sample.run_id, sample.node_id, sample.attempt);
    const known = next[key];
    // Samples of one NPU may arrive out of order across batches: keep the newest.
    if (!known || Date.parse(known.at) <= Date.parse(sample.at)) next[key] = sample;
  }
  return next;
}

/** Forgets NPUs that sent nothing for a while, so the map stays small. By age and
 * not by the workers' NPU lists: an NPU's first samples can come before the first
 * heartbeat that lists it. */
export const SAMPLE_TTL_MS = 5 * 60 * 1000;

function pruned(latest: Record<string, Sample>, now: number): Record<string, Sample> {
  return Object.fromEntries(
    Object.entries(latest).filter(([, sample]) => now - Date.parse(sample.at) < SAMPLE_TTL_MS),
  );
}

export function resourceReducer(state: ResourceState, frame: MonitorFrame): ResourceState {
  switch (frame.type) {
    case "snapshot": {
      const workers = Object.fromEntries(frame.workers.map((worker) => [worker.name, worker]));
      return { heartbeatS: frame.heartbeat_s, workers, latest: withSamples({}, frame.samples) };
    }
    case "worker": {
      const workers = { ...state.workers, [frame.worker.name]: frame.worker };
      return { ...state, workers, latest: pruned(state.latest, Date.parse(frame.worker.last_seen)) };
    }
    case "samples":
      return { ...state, latest: withSamples(state.latest, frame.samples) };
  }
}

export function sortedWorkers(state: ResourceState): Worker[] {
  const rank: Record<string, number> = { online: 0, draining: 1, silent: 2, stopped: 3 };
  return Object.values(state.workers).sort(
    (a, b) => (rank[a.state] ?? 4) - (rank[b.state] ?? 4) || a.name.localeCompare(b.name),
  );
}

/** "concurrency 2→4 (queue depth 12)": one scaling decision, as the monitor lists it. */
export function scalingLine(change: ScalingChange): string {
  return `concurrency ${change.from}→${change.to} (queue depth ${change.queue_depth})`;
}

/** The newest scaling decisions first, at most ``limit``. */
export function recentScaling(worker: Worker, limit = 5): ScalingChange[] {
  return [...(worker.scaling ?? [])].reverse().slice(0, limit);
}

/** "2 of 1–4 processes", or "2 processes" for a fixed pool. */
export function poolText(worker: Worker): string {
  const size = worker.pool_size ?? worker.concurrency;
  if (worker.concurrency_min) return `${size} of ${worker.concurrency_min}–${worker.concurrency} processes`;
  return `${size} process${size === 1 ? "" : "es"}`;
}

/** The executions an NPU runs now: none for an idle or warm one. */
export function npuExecutions(npu: Npu): NpuExecution[] {
  if (npu.running?.length) return npu.running;
  if (!npu.run_id) return [];
  return [{ run_id: npu.run_id, node_id: npu.node_id ?? "", attempt: npu.attempt ?? 0 }];
}

/** A worker's dedicated NPUs, by pipeline then node (a node that ran in two of the
 * worker's processes has an NPU in each, side by side), and its other NPUs. */
export function npusByKind(worker: Worker): { dedicated: Npu[]; others: Npu[] } {
  const dedicated = worker.npus
    .filter((npu) => npu.kind === "dedicated")
    .sort(
      (a, b) =>
        (a.pipeline_name ?? "").localeCompare(b.pipeline_name ?? "") ||
        (a.pipeline_id ?? "").localeCompare(b.pipeline_id ?? "") ||
        (a.node_id ?? "").localeCompare(b.node_id ?? "") ||
        a.container_id.localeCompare(b.container_id),
    );
  return { dedicated, others: worker.npus.filter((npu) => npu.kind !== "dedicated") };
}

/** "idle 42 s", "idle 3 min", "idle 2 h" since ``since``, as of ``now`` (ms). */
export function idleText(since: string, now: number): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(since)) / 1000));
  if (seconds < 120) return `idle ${seconds} s`;
  if (seconds < 7200) return `idle ${Math.floor(seconds / 60)} min`;
  return `idle ${Math.floor(seconds / 3600)} h`;
}
