// The pipeline document (control_unit/graph.py validates it) and its translation to
// and from the canvas's nodes and edges. Fields the editor does not know are kept
// as they are, so saving never drops what another tool wrote.

import type { Edge, Node } from "@xyflow/react";

export type PortSpec = string | { name: string; list?: boolean };

export interface Limits {
  timeout_s?: number;
  retries?: number;
  backoff_s?: number;
  memory_mb?: number;
  cpus?: number;
  pids?: number;
  network?: boolean;
  image?: string;
}

export interface DocumentNode {
  id: string;
  label?: string;
  code: string;
  inputs?: PortSpec[];
  outputs?: string[];
  position?: { x: number; y: number };
  limits?: Limits;
  [extra: string]: unknown;
}

export interface DocumentEdge {
  id?: string;
  source: string;
  source_port: string;
  target: string;
  target_port: string;
}

export interface PipelineDocument {
  schema_version: number;
  nodes: DocumentNode[];
  edges: DocumentEdge[];
  [extra: string]: unknown;
}

export interface Problem {
  code: string;
  message: string;
  node?: string | null;
  edge?: string | null;
}

export interface Port {
  name: string;
  list: boolean;
}

// What a canvas node carries: the document node minus id and position.
export type FlowNodeData = {
  label: string;
  code: string;
  inputs: Port[];
  outputs: string[];
  limits: Limits;
  extra: Record<string, unknown>;
};

export type FlowNode = Node<FlowNodeData, "flowkit">;

export interface Graph {
  nodes: FlowNode[];
  edges: Edge[];
}

export const SCHEMA_VERSION = 1;
export const NODE_ID_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

function portOf(spec: PortSpec): Port {
  return typeof spec === "string"
    ? { name: spec, list: false }
    : { name: spec.name, list: Boolean(spec.list) };
}

function specOf(port: Port): PortSpec {
  return port.list ? { name: port.name, list: true } : port.name;
}

export function toGraph(document: PipelineDocument | null): Graph {
  if (!document) return { nodes: [], edges: [] };
  const nodes: FlowNode[] = document.nodes.map((raw, index) => {
    const { id, label, code, inputs, outputs, position, limits, ...extra } = raw;
    return {
      id,
      type: "flowkit",
      position: position ?? { x: 250 * index, y: 0 },
      data: {
        label: label ?? id,
        code: code ?? "",
        inputs: (inputs ?? []).map(portOf),
        outputs: outputs ?? [],
        limits: limits ?? {},
        extra,
      },
    };
  });
  const edges: Edge[] = document.edges.map((raw, index) => ({
    id: raw.id ?? `e${index + 1}`,
    source: raw.source,
    sourceHandle: raw.source_port,
    target: raw.target,
    targetHandle: raw.target_port,
  }));
  return { nodes, edges };
}

export function toDocument(graph: Graph, base: PipelineDocument | null): PipelineDocument {
  const {
    nodes: _nodes,
    edges: _edges,
    ...rest
  } = base ?? { schema_version: SCHEMA_VERSION, nodes: [], edges: [] };
  return {
    ...rest,
    schema_version: (rest.schema_version as number | undefined) ?? SCHEMA_VERSION,
    nodes: graph.nodes.map((node) => {
      const limits = Object.fromEntries(
        Object.entries(node.data.limits).filter(([, value]) => value !== undefined && value !== null),
      );
      return {
        ...node.data.extra,
        id: node.id,
        label: node.data.label,
        code: node.data.code,
        inputs: node.data.inputs.map(specOf),
        outputs: node.data.outputs,
        position: { x: Math.round(node.position.x), y: Math.round(node.position.y) },
        ...(Object.keys(limits).length ? { limits } : {}),
      };
    }),
    edges: graph.edges.map((edge) => ({
      id: edge.id,
      source: edge.source,
      source_port: edge.sourceHandle ?? "",
      target: edge.target,
      target_port: edge.targetHandle ?? "",
    })),
  };
}

/** True when an edge source -> target would close a cycle: target already reaches source. */
export function formsCycle(edges: readonly Edge[], source: string, target: string): boolean {
  if (source === target) return true;
  const next = new Map<string, string[]>();
  for (const edge of edges) {
    const list = next.get(edge.source) ?? [];
    list.push(edge.target);
    next.set(edge.source, list);
  }
  const seen = new Set<string>([target]);
  const stack = [target];
  while (stack.length) {
    const current = stack.pop() as string;
    if (current === source) return true;
    for (const following of next.get(current) ?? []) {
      if (!seen.has(following)) {
        seen.add(following);
        stack.push(following);
      }
    }
  }
  return false;
}

/** A node id not used yet, derived from a template or label: "fetch", "fetch_2", ... */
export function freshNodeId(base: string, taken: ReadonlySet<string>): string {
  let stem =
    base
      .replace(/[^A-Za-z0-9_-]+/g, "_")
      .replace(/^[^A-Za-z_]+/, "")
      .slice(0, 56) || "node";
  if (!NODE_ID_PATTERN.test(stem)) stem = "node";
  if (!taken.has(stem)) return stem;
  for (let n = 2; ; n += 1) {
    const candidate = `${stem}_${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}

export function freshEdgeId(taken: ReadonlySet<string>): string {
  for (let n = taken.size + 1; ; n += 1) {
    const candidate = `e${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}

/** "a, b, items[]" <-> ports; a trailing [] marks a list port (it accepts several edges). */
export function formatPorts(ports: readonly Port[]): string {
  return ports.map((port) => (port.list ? `${port.name}[]` : port.name)).join(", ");
}

export function parsePorts(text: string): Port[] {
  const seen = new Set<string>();
  const ports: Port[] = [];
  for (const piece of text.split(",")) {
    const trimmed = piece.trim();
    if (!trimmed) continue;
    const list = trimmed.endsWith("[]");
    const name = list ? trimmed.slice(0, -2).trim() : trimmed;
    if (name && !seen.has(name)) {
      seen.add(name);
      ports.push({ name, list });
    }
  }
  return ports;
}
