// The one typed client of FlowKit's JSON API. Every call sends the session's CSRF
// token and turns a non-2xx answer into an ApiError carrying the server's
// {code, message, problems?} so pages can show it as it is.

import type { PipelineDocument, Problem } from "./document";

export type Role = "admin" | "editor" | "viewer";

export interface Me {
  username: string;
  role: Role | null;
}

export interface PipelineSummary {
  id: string;
  name: string;
  description: string;
  latest_version: number | null;
  created_at: string;
  updated_at: string;
}

export interface PipelineDetail extends PipelineSummary {
  document: PipelineDocument | null;
}

export interface Version {
  number: number;
  created_at: string;
}

export interface Run {
  id: string;
  pipeline_id: string;
  pipeline_name: string;
  version: number;
  state: string;
  reason: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface NodeRun {
  node_id: string;
  state: string;
  attempt: number;
  reused: boolean;
  reason: string;
  outputs: Record<string, unknown> | null;
  status_message: string;
  error: Record<string, unknown> | null;
}

export interface RunDetail extends Run {
  input: unknown;
  nodes: NodeRun[];
}

export interface LogLine {
  level?: string;
  message?: string;
  [key: string]: unknown;
}

export interface NodeTest {
  id: string;
  label: string;
  state: "queued" | "running" | "succeeded" | "failed";
  next_nodes: string[];
  outputs: Record<string, unknown>;
  status_message: string;
  error: { error_type?: string; message?: string; traceback?: string } | null;
  logs: LogLine[];
  dropped_log_lines: number;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problems: Problem[];

  constructor(status: number, code: string, message: string, problems: Problem[] = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.problems = problems;
  }
}

export function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let response: Response;
  try {
    response = await fetch(`/api${path}`, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(
      0,
      "network_error",
      "The server cannot be reached. Check your connection and try again.",
    );
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data ?? {}) as { code?: string; message?: string; problems?: Problem[] };
    if (response.status === 401) {
      // The session ended: log in again and come back here.
      window.location.assign(`/accounts/login/?next=${encodeURIComponent(window.location.pathname)}`);
    }
    throw new ApiError(
      response.status,
      error.code ?? "http_error",
      error.message ?? `The server answered ${response.status}.`,
      error.problems ?? [],
    );
  }
  return data as T;
}

const q = encodeURIComponent;

export const api = {
  me: () => request<Me>("GET", "/me"),
  listPipelines: (search = "") =>
    request<PipelineSummary[]>("GET", `/pipelines${search ? `?search=${q(search)}` : ""}`),
  createPipeline: (name: string, document: PipelineDocument) =>
    request<PipelineDetail>("POST", "/pipelines", { name, document }),
  getPipeline: (id: string) => request<PipelineDetail>("GET", `/pipelines/${q(id)}`),
  renamePipeline: (id: string, name: string) =>
    request<PipelineDetail>("PATCH", `/pipelines/${q(id)}`, { name }),
  duplicatePipeline: (id: string, name: string) =>
    request<PipelineDetail>("POST", `/pipelines/${q(id)}/duplicate`, { name }),
  deletePipeline: (id: string) => request<void>("DELETE", `/pipelines/${q(id)}`),
  exportPipeline: (id: string) => request<Record<string, unknown>>("GET", `/pipelines/${q(id)}/export`),
  importPipeline: (data: unknown) => request<PipelineDetail>("POST", "/pipelines/import", data),
  saveDocument: (id: string, document: PipelineDocument) =>
    request<Version>("PUT", `/pipelines/${q(id)}/document`, { document }),
  startRun: (id: string, input: unknown) => request<Run>("POST", `/pipelines/${q(id)}/runs`, { input }),
  getRun: (id: string) => request<RunDetail>("GET", `/runs/${q(id)}`),
  startNodeTest: (body: {
    code: string;
    inputs: Record<string, unknown>;
    limits: Record<string, unknown>;
    label: string;
  }) => request<{ id: string; state: string }>("POST", "/node-tests", body),
  getNodeTest: (id: string) => request<NodeTest>("GET", `/node-tests/${q(id)}`),
  cancelNodeTest: (id: string) => request<NodeTest>("POST", `/node-tests/${q(id)}/cancel`),
  drainWorker: (name: string) =>
    request<{ worker: string; state: string; queues: string[] }>("POST", `/workers/${q(name)}/drain`),
};

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

// ---- The run monitor, runs history, resource monitor and vault pages ----

export interface RunSummary extends Run {
  source_run_id: string | null;
  rerun_from: string;
}

export interface EventPage {
  events: import("./monitor/runState").TraceEvent[];
  last_seq: number;
  more: boolean;
}

export interface NodeFigures {
  node_id: string;
  executions: number;
  failures: number;
  p50_s: number | null;
  p95_s: number | null;
  total_s: number | null;
}

export interface PipelineFigures {
  pipeline_id: string;
  runs: number;
  runs_by_state: Record<string, number>;
  success_rate: number | null;
  run_duration_p50_s: number | null;
  run_duration_p95_s: number | null;
  nodes: NodeFigures[];
  slowest_nodes: string[];
}

export interface SecretSummary {
  name: string;
  description: string;
  created_at: string;
  updated_at: string;
  last_used_at: string | null;
}

export interface SecretAuditEvent {
  at: string;
  action: string;
  actor_name: string;
  names: string[];
  run_id: string;
  node_id: string;
  detail: string;
}

export interface AuditEvent {
  id: number;
  at: string;
  actor: string;
  via: string;
  action: string;
  target: string;
  detail: Record<string, unknown>;
  ip: string | null;
}

export interface RunFilterParams {
  pipeline?: string;
  state?: string;
  since?: string;
  until?: string;
  before?: string; // a run id: the page of runs older than it
  limit?: number;
}

function queryOf(params: Record<string, string | number | string[] | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const traceApi = {
  listRuns: (filters: RunFilterParams) => request<RunSummary[]>("GET", `/runs${queryOf({ ...filters })}`),
  pauseRun: (id: string) => request<RunSummary>("POST", `/runs/${q(id)}/pause`),
  resumeRun: (id: string) => request<RunSummary>("POST", `/runs/${q(id)}/resume`),
  cancelRun: (id: string) => request<RunSummary>("POST", `/runs/${q(id)}/cancel`),
  restartRun: (id: string) => request<RunSummary>("POST", `/runs/${q(id)}/restart`),
  rerunFrom: (id: string, nodeId: string) =>
    request<RunSummary>("POST", `/runs/${q(id)}/rerun`, { node_id: nodeId }),
  events: (id: string, params: { after?: number; kind?: string[]; node?: string; limit?: number }) =>
    request<EventPage>("GET", `/runs/${q(id)}/events${queryOf(params)}`),
  timeline: (id: string) =>
    request<import("./monitor/runState").Execution[]>("GET", `/runs/${q(id)}/timeline`),
  nodeResources: (id: string, nodeId: string) =>
    request<import("./monitor/runState").Sample[]>("GET", `/runs/${q(id)}/nodes/${q(nodeId)}/resources`),
  version: (pipelineId: string, number: number) =>
    request<{ number: number; created_at: string; document: PipelineDocument }>(
      "GET",
      `/pipelines/${q(pipelineId)}/versions/${number}`,
    ),
  figures: (pipelineId: string) => request<PipelineFigures>("GET", `/pipelines/${q(pipelineId)}/figures`),
  listSecrets: () => request<SecretSummary[]>("GET", "/secrets"),
  createSecret: (name: string, value: string, description: string) =>
    request<SecretSummary>("POST", "/secrets", { name, value, description }),
  replaceSecret: (name: string, value: string) =>
    request<SecretSummary>("PUT", `/secrets/${q(name)}`, { value }),
  deleteSecret: (name: string) => request<void>("DELETE", `/secrets/${q(name)}`),
  secretAudit: () => request<SecretAuditEvent[]>("GET", "/secrets/audit"),
  audit: (filters: { action?: string; actor?: string; since?: string; limit?: number }) =>
    request<AuditEvent[]>("GET", `/audit${queryOf({ ...filters })}`),
};

/** Where a node's whole input or output value is downloaded (previews are capped). */
export function nodeValueUrl(runId: string, nodeId: string, direction: "inputs" | "outputs", port: string) {
  return `/api/runs/${q(runId)}/nodes/${q(nodeId)}/${direction}/${q(port)}`;
}
