import { describe, expect, it } from "vitest";
import {
  formatPorts,
  formsCycle,
  freshEdgeId,
  freshNodeId,
  parsePorts,
  toDocument,
  toGraph,
  type PipelineDocument,
} from "./document";

const edge = (source: string, target: string) => ({ id: `${source}-${target}`, source, target });

describe("formsCycle", () => {
  const edges = [edge("a", "b"), edge("b", "c")];

  it("refuses an edge back to an ancestor", () => {
    expect(formsCycle(edges, "c", "a")).toBe(true);
    expect(formsCycle(edges, "b", "a")).toBe(true);
  });

  it("refuses a self-loop", () => {
    expect(formsCycle(edges, "b", "b")).toBe(true);
  });

  it("accepts edges that keep the graph acyclic", () => {
    expect(formsCycle(edges, "a", "c")).toBe(false);
    expect(formsCycle(edges, "c", "d")).toBe(false);
    expect(formsCycle([], "x", "y")).toBe(false);
  });
});

describe("toGraph and toDocument", () => {
  const document: PipelineDocument = {
    schema_version: 1,
    name: "kept",
    nodes: [
      {
        id: "a",
        label: "A",
        code: "pass",
        inputs: ["x", { name: "items", list: true }],
        outputs: ["out"],
        position: { x: 10.4, y: 20.6 },
        limits: { timeout_s: 5, network: true },
        continue_on_error: true,
      },
      { id: "b", code: "pass" },
    ],
    edges: [{ id: "e1", source: "a", source_port: "out", target: "b", target_port: "in" }],
  };

  it("round-trips a document, keeping fields the editor does not know", () => {
    const back = toDocument(toGraph(document), document);
    expect(back.name).toBe("kept");
    expect(back.nodes[0]).toEqual({
      id: "a",
      label: "A",
      code: "pass",
      inputs: ["x", { name: "items", list: true }],
      outputs: ["out"],
      position: { x: 10, y: 21 },
      limits: { timeout_s: 5, network: true },
      continue_on_error: true,
    });
    expect(back.nodes[1]).toMatchObject({ id: "b", label: "b", inputs: [], outputs: [] });
    expect(back.nodes[1]).not.toHaveProperty("limits");
    expect(back.edges).toEqual(document.edges);
  });

  it("drops limits set back to the default", () => {
    const graph = toGraph(document);
    graph.nodes[0].data.limits = { timeout_s: undefined, network: true };
    expect(toDocument(graph, document).nodes[0].limits).toEqual({ network: true });
  });
});

describe("ids", () => {
  it("derives a free node id from a template or label", () => {
    expect(freshNodeId("python", new Set())).toBe("python");
    expect(freshNodeId("python", new Set(["python", "python_2"]))).toBe("python_3");
    expect(freshNodeId("HTTP fetch!", new Set())).toBe("HTTP_fetch_");
    expect(freshNodeId("9lives", new Set())).toBe("lives");
    expect(freshNodeId("", new Set())).toBe("node");
  });

  it("finds a free edge id", () => {
    expect(freshEdgeId(new Set(["e1", "e2"]))).toBe("e3");
    expect(freshEdgeId(new Set(["e3"]))).toBe("e2");
  });
});

describe("ports as text", () => {
  it("parses names, list ports and duplicates", () => {
    expect(parsePorts(" a, items[] ,, a, b ")).toEqual([
      { name: "a", list: false },
      { name: "items", list: true },
      { name: "b", list: false },
    ]);
  });

  it("formats what it parses", () => {
    expect(formatPorts(parsePorts("a, items[]"))).toBe("a, items[]");
  });
});
