// Automatic layout, left to right in dependency order (dagre).

import dagre from "@dagrejs/dagre";
import type { Edge } from "@xyflow/react";
import type { FlowNode } from "../document";

export function layoutNodes(nodes: readonly FlowNode[], edges: readonly Edge[]): FlowNode[] {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 40, ranksep: 80 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) {
    graph.setNode(node.id, { width: node.measured?.width ?? 200, height: node.measured?.height ?? 90 });
  }
  for (const edge of edges) graph.setEdge(edge.source, edge.target);
  dagre.layout(graph);
  return nodes.map((node) => {
    const placed = graph.node(node.id);
    const width = node.measured?.width ?? 200;
    const height = node.measured?.height ?? 90;
    // dagre gives centres; xyflow positions are top-left corners.
    return { ...node, position: { x: placed.x - width / 2, y: placed.y - height / 2 } };
  });
}
