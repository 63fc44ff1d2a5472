// What the monitor page knows of one run, and how each frame of /ws/runs/<id>/ (and
// each API answer) changes it. Pure: (state, action) -> state, no I/O, so the rules
// that decide what a person sees (ordering, duplicates, gaps) are unit-tested.

export type NodeStateName =
  "pending" | "queued" | "running" | "paused" | "succeeded" | "failed" | "skipped" | "cancelled";

export const TERMINAL_RUN_STATES: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled"]);

export interface RunInfo {
  id: string;
  pipeline_id: string;
  pipeline: string;
  version: number;
  state: string;
  reason: string;
  rerun_from: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

/** {port: {bytes, preview}} for values too large to travel whole. */
export type Truncated = Record<string, { bytes: number; preview: string }>;

export interface NodeError {
  error_type?: string;
  message?: string;
  traceback?: string;
  [key: string]: unknown;
}

export interface NodeView {
  node_id: string;
  state: string;
  attempt: number;
  reused: boolean;
  reason: string;
  inputs: Record<string, unknown> | null;
  outputs: Record<string, unknown> | null;
  next_nodes: string[] | null;
  status_message: string;
  error: NodeError | null;
  dropped_log_lines: number;
  infra_retries?: number;
  started_at: string | null;
  finished_at: string | null;
  worker: string;
  truncated?: { inputs?: Truncated; outputs?: Truncated };
}

export interface TraceEvent {
  seq: number;
  kind: string;
  node_id: string | null;
  attempt: number;
  at: string;
  data: Record<string, unknown>;
}

export interface Sample {
  run_id?: string;
  node_id?: string;
  attempt: number;
  at: string;
  cpu_percent: number | null;
  memory_bytes: number;
  memory_limit_bytes: number | null;
  net_rx_bytes: number | null;
  net_tx_bytes: number | null;
  pids: number | null;
}

export interface Execution {
  node_id: string;
  attempt: number;
  worker: string;
  started_at: string;
  finished_at: string | null;
  duration_s: number | null;
  outcome: string;
  error_type?: string;
  cpu_percent_max?: number | null;
  memory_bytes_max?: number | null;
}

export interface LogLine {
  seq: number;
  attempt: number;
  at: string;
  level: string;
  stream: string;
  message: string;
  /** A marker where the runtime dropped lines, not a line the node wrote. */
  dropped?: { lines: number; bytes: number };
}

export type SnapshotFrame = { type: "snapshot"; seq: number; run: RunInfo; nodes: NodeView[] };
export type EventsFrame = { type: "events"; events: TraceEvent[] };
export type SamplesFrame = { type: "samples"; samples: Sample[] };
export type RunFrame = SnapshotFrame | EventsFrame | SamplesFrame | { type: "error"; message: string };

export type MonitorAction =
  | { type: "frames"; frames: RunFrame[] }
  | { type: "timeline"; executions: Execution[] }
  | { type: "logs"; nodeId: string; events: TraceEvent[] }
  | { type: "resources"; nodeId: string; samples: Sample[] };

export interface MonitorState {
  run: RunInfo | null;
  nodes: Record<string, NodeView>;
  /** The last event applied; the stream is resumed with ?after=lastSeq. */
  lastSeq: number;
  /** Log lines per node, in seq order, at most MAX_LOG_LINES of the latest. */
  logs: Record<string, LogLine[]>;
  /** Resource samples per node, in time order, at most MAX_SAMPLES of the latest. */
  samples: Record<string, Sample[]>;
  /** Executions keyed "node#attempt", for the timeline and the attempts list. */
  executions: Record<string, Execution>;
  /** Set when a frame skipped sequence numbers: the stream must be resumed. */
  gapAfter: number | null;
}

export const MAX_LOG_LINES = 2000;
export const MAX_SAMPLES = 900;

export const initialMonitorState: MonitorState = {
  run: null,
  nodes: {},
  lastSeq: 0,
  logs: {},
  samples: {},
  executions: {},
  gapAfter: null,
};

const NODE_TRANSITIONS: ReadonlySet<string> = new Set([
  "queued",
  "running",
  "retry",
  "paused",
  "resumed",
  "succeeded",
  "failed",
  "skipped",
  "cancelled",
]);
const FINAL_NODE_STATES: ReadonlySet<string> = new Set(["succeeded", "failed", "skipped", "cancelled"]);

/** Which of ``events`` follow ``lastSeq`` without a gap. Events at or below lastSeq
 * were seen already (a reconnect overlaps); a first fresh number above lastSeq + 1
 * means frames were lost, and nothing after the gap may be applied. */
export function freshEvents(
  lastSeq: number,
  events: readonly TraceEvent[],
): { fresh: TraceEvent[]; gap: boolean } {
  const fresh: TraceEvent[] = [];
  let expected = lastSeq + 1;
  for (const event of events) {
    if (event.seq < expected) continue;
    if (event.seq > expected) return { fresh, gap: true };
    fresh.push(event);
    expected += 1;
  }
  return { fresh, gap: false };
}

export function executionKey(nodeId: string, attempt: number): string {
  return `${nodeId}#${attempt}`;
}

export function monitorReducer(state: MonitorState, action: MonitorAction): MonitorState {
  switch (action.type) {
    case "frames":
      return action.frames.reduce(applyFrame, state);
    case "timeline": {
      const executions = { ...state.executions };
      for (const execution of action.executions) {
        const key = executionKey(execution.node_id, execution.attempt);
        // The stream may already know more (a finish after the API answered).
        const known = executions[key];
        executions[key] = known?.finished_at && !execution.finished_at ? known : { ...known, ...execution };
      }
      return { ...state, executions };
    }
    case "logs": {
      const lines = action.events.map(logLineOf).filter((line): line is LogLine => line !== null);
      return {
        ...state,
        logs: { ...state.logs, [action.nodeId]: mergeLogs(state.logs[action.nodeId], lines) },
      };
    }
    case "resources":
      return {
        ...state,
        samples: {
          ...state.samples,
          [action.nodeId]: mergeSamples(state.samples[action.nodeId], action.samples),
        },
      };
  }
}

function applyFrame(state: MonitorState, frame: RunFrame): MonitorState {
  switch (frame.type) {
    case "snapshot": {
      const nodes: Record<string, NodeView> = {};
      for (const node of frame.nodes) nodes[node.node_id] = node;
      // Logs and samples already loaded stay: they are keyed by seq and time.
      return { ...state, run: frame.run, nodes, lastSeq: frame.seq, gapAfter: null };
    }
    case "events": {
      const { fresh, gap } = freshEvents(state.lastSeq, frame.events);
      let next = fresh.length ? fresh.reduce(applyEvent, state) : state;
      if (fresh.length) next = { ...next, lastSeq: fresh[fresh.length - 1].seq };
      if (gap) next = { ...next, gapAfter: next.lastSeq };
      else if (next.gapAfter !== null && fresh.length) next = { ...next, gapAfter: null };
      return next;
    }
    case "samples": {
      const byNode = new Map<string, Sample[]>();
      for (const sample of frame.samples) {
        if (!sample.node_id) continue;
        const list = byNode.get(sample.node_id) ?? [];
        list.push(sample);
        byNode.set(sample.node_id, list);
      }
      if (!byNode.size) return state;
      const samples = { ...state.samples };
      for (const [nodeId, list] of byNode) samples[nodeId] = mergeSamples(samples[nodeId], list);
      return { ...state, samples };
    }
    case "error":
      return state;
  }
}

function emptyNode(nodeId: string): NodeView {
  return {
    node_id: nodeId,
    state: "pending",
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

function withNode(state: MonitorState, nodeId: string, change: (node: NodeView) => NodeView): MonitorState {
  const node = state.nodes[nodeId] ?? emptyNode(nodeId);
  return { ...state, nodes: { ...state.nodes, [nodeId]: change(node) } };
}

function applyEvent(state: MonitorState, event: TraceEvent): MonitorState {
  const data = event.data;
  if (event.kind === "run") {
    if (!state.run) return state;
    const target = String(data.target ?? state.run.state);
    const run = {
      ...state.run,
      state: target,
      reason: typeof data.reason === "string" ? data.reason : state.run.reason,
    };
    if (target === "running" && !run.started_at) run.started_at = event.at;
    if (TERMINAL_RUN_STATES.has(target)) run.finished_at = event.at;
    return { ...state, run };
  }
  const nodeId = event.node_id;
  if (!nodeId) return state;
  if (NODE_TRANSITIONS.has(event.kind)) {
    return withNode(state, nodeId, (node) => {
      const target = String(data.target ?? node.state);
      const next: NodeView = { ...node, state: target, attempt: event.attempt || node.attempt };
      next.reason = typeof data.reason === "string" ? data.reason : "";
      if (target === "queued" && event.kind === "retry") next.error = null;
      if (target === "running" && event.kind === "running") next.started_at = event.at;
      if (FINAL_NODE_STATES.has(target)) next.finished_at = event.at;
      if (target === "succeeded") {
        if ("outputs" in data) next.outputs = data.outputs as Record<string, unknown>;
        if (Array.isArray(data.next_nodes)) next.next_nodes = data.next_nodes as string[];
        if (typeof data.status_message === "string") next.status_message = data.status_message;
        if (typeof data.reused === "boolean") next.reused = data.reused;
        next.truncated = {
          ...node.truncated,
          outputs: (data.truncated as { outputs?: Truncated } | undefined)?.outputs,
        };
        next.error = null;
      }
      if (target === "failed" && data.error) next.error = data.error as NodeError;
      return next;
    });
  }
  switch (event.kind) {
    case "waiting":
      // Queued, and no online worker offers the capabilities the node requires.
      return withNode(state, nodeId, (node) =>
        node.state === "queued" ? { ...node, reason: String(data.reason ?? node.reason) } : node,
      );
    case "inputs":
      return withNode(state, nodeId, (node) => ({
        ...node,
        inputs: (data.inputs as Record<string, unknown>) ?? {},
        truncated: { ...node.truncated, inputs: data.truncated as Truncated | undefined },
      }));
    case "outputs":
      return withNode(state, nodeId, (node) => ({
        ...node,
        outputs: (data.outputs as Record<string, unknown>) ?? {},
        next_nodes: Array.isArray(data.next_nodes) ? (data.next_nodes as string[]) : node.next_nodes,
        status_message: typeof data.status_message === "string" ? data.status_message : node.status_message,
        truncated: { ...node.truncated, outputs: data.truncated as Truncated | undefined },
      }));
    case "error":
      return withNode(state, nodeId, (node) => ({ ...node, error: data as NodeError }));
    case "started": {
      const key = executionKey(nodeId, event.attempt);
      // The timeline from the API may have it already, perhaps finished.
      const execution: Execution = state.executions[key] ?? {
        node_id: nodeId,
        attempt: event.attempt,
        worker: String(data.worker ?? ""),
        started_at: event.at,
        finished_at: null,
        duration_s: null,
        outcome: "",
      };
      const next = withNode(state, nodeId, (node) => ({ ...node, worker: execution.worker }));
      return { ...next, executions: { ...next.executions, [key]: execution } };
    }
    case "finished": {
      const key = executionKey(nodeId, event.attempt);
      const known = state.executions[key];
      const duration = typeof data.duration_s === "number" ? data.duration_s : null;
      const execution: Execution = {
        node_id: nodeId,
        attempt: event.attempt,
        worker: known?.worker ?? "",
        started_at: known?.started_at ?? startOf(event.at, duration),
        finished_at: event.at,
        duration_s: duration,
        outcome: String(data.outcome ?? ""),
        ...(known?.error_type ? { error_type: known.error_type } : {}),
      };
      return { ...state, executions: { ...state.executions, [key]: execution } };
    }
    case "log":
    case "logs_dropped": {
      const line = logLineOf(event);
      if (!line) return state;
      let next = { ...state, logs: { ...state.logs, [nodeId]: mergeLogs(state.logs[nodeId], [line]) } };
      if (line.dropped) {
        next = withNode(next, nodeId, (node) => ({
          ...node,
          dropped_log_lines: node.dropped_log_lines + (line.dropped?.lines ?? 0),
        }));
      }
      return next;
    }
    default:
      return state;
  }
}

function startOf(finishedAt: string, durationS: number | null): string {
  if (durationS === null) return finishedAt;
  return new Date(Date.parse(finishedAt) - durationS * 1000).toISOString();
}

export function logLineOf(event: TraceEvent): LogLine | null {
  if (event.kind === "log") {
    return {
      seq: event.seq,
      attempt: event.attempt,
      at: typeof event.data.ts === "string" ? event.data.ts : event.at,
      level: String(event.data.level ?? "info"),
      stream: String(event.data.stream ?? ""),
      message: String(event.data.message ?? ""),
    };
  }
  if (event.kind === "logs_dropped") {
    const lines = Number(event.data.lines ?? 0);
    const bytes = Number(event.data.bytes ?? 0);
    return {
      seq: event.seq,
      attempt: event.attempt,
      at: event.at,
      level: "warning",
      stream: "",
      message: `${lines} log line(s), ${bytes} bytes, dropped here: the node logged more than its limit`,
      dropped: { lines, bytes },
    };
  }
  return null;
}

/** Lines from the API and the stream overlap; seq makes the union exact. */
export function mergeLogs(known: readonly LogLine[] | undefined, lines: readonly LogLine[]): LogLine[] {
  const current = known ?? [];
  if (!lines.length) return current as LogLine[];
  const last = current.length ? current[current.length - 1].seq : 0;
  let merged: LogLine[];
  if (lines.every((line, index) => line.seq > last && (index === 0 || line.seq > lines[index - 1].seq))) {
    merged = [...current, ...lines]; // the live case: appended in order
  } else {
    const bySeq = new Map<number, LogLine>();
    for (const line of current) bySeq.set(line.seq, line);
    for (const line of lines) bySeq.set(line.seq, line);
    merged = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  }
  return merged.length > MAX_LOG_LINES ? merged.slice(merged.length - MAX_LOG_LINES) : merged;
}

/** Samples carry no sequence number; (attempt, time) identifies one. */
export function mergeSamples(known: readonly Sample[] | undefined, samples: readonly Sample[]): Sample[] {
  const byKey = new Map<string, Sample>();
  for (const sample of known ?? []) byKey.set(`${sample.attempt}@${sample.at}`, sample);
  for (const sample of samples) byKey.set(`${sample.attempt}@${sample.at}`, sample);
  const merged = [...byKey.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  return merged.length > MAX_SAMPLES ? merged.slice(merged.length - MAX_SAMPLES) : merged;
}

/** Executions ordered for the timeline: by start, then node, then attempt. */
export function timelineOf(executions: MonitorState["executions"]): Execution[] {
  return Object.values(executions).sort(
    (a, b) =>
      Date.parse(a.started_at) - Date.parse(b.started_at) ||
      a.node_id.localeCompare(b.node_id) ||
      a.attempt - b.attempt,
  );
}

/** How the graph colours a node: its state, or "reused" for outputs taken over by a rerun. */
export function displayState(node: NodeView | undefined): string {
  if (!node) return "pending";
  return node.reused && node.state === "succeeded" ? "reused" : node.state;
}

/** The node list's filter: words that must all appear in a node's id, label or
 * shown state ("failed", "reused"), in any case. */
export function nodeMatches(filter: string, nodeId: string, label: string, state: string): boolean {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const text = `${nodeId} ${label} ${state}`.toLowerCase();
  return words.every((word) => text.includes(word));
}
