// Undo/redo over whole graph states. Selection and measured sizes are not history:
// undo should bring back the graph, not what was clicked.

import type { Edge } from "@xyflow/react";
import type { FlowNode, Graph } from "../document";

const LIMIT = 200;

function strip(graph: Graph): Graph {
  return {
    nodes: graph.nodes.map(({ id, type, position, data }) => ({ id, type, position, data }) as FlowNode),
    edges: graph.edges.map(({ id, source, sourceHandle, target, targetHandle }) => ({
      id,
      source,
      sourceHandle,
      target,
      targetHandle,
    })) as Edge[],
  };
}

function same(a: Graph, b: Graph): boolean {
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

export class History {
  private past: Graph[] = [];
  private future: Graph[] = [];
  // Coalesces a run of edits of one field (typing code) into one undo step.
  private lastKey: string | null = null;
  private lastAt = 0;

  record(current: Graph, coalesceKey: string | null = null): void {
    const now = Date.now();
    if (coalesceKey !== null && coalesceKey === this.lastKey && now - this.lastAt < 1500) {
      this.lastAt = now;
      return;
    }
    this.lastKey = coalesceKey;
    this.lastAt = now;
    this.past.push(strip(current));
    if (this.past.length > LIMIT) this.past.shift();
    this.future = [];
  }

  undo(current: Graph): Graph | null {
    this.lastKey = null;
    // A recorded state equal to the present (a click that started no real drag) is no step.
    let previous = this.past.pop();
    while (previous && same(previous, current)) previous = this.past.pop();
    if (!previous) return null;
    this.future.push(strip(current));
    return previous;
  }

  redo(current: Graph): Graph | null {
    this.lastKey = null;
    const next = this.future.pop();
    if (!next) return null;
    this.past.push(strip(current));
    return next;
  }

  get canUndo(): boolean {
    return this.past.length > 0;
  }

  get canRedo(): boolean {
    return this.future.length > 0;
  }
}
