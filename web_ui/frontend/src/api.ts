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
};

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}
