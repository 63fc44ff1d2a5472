import { describe, expect, it } from "vitest";
import type { FlowNode, Graph } from "../document";
import { History } from "./history";

function graphWith(...ids: string[]): Graph {
  const nodes = ids.map(
    (id) =>
      ({
        id,
        type: "flowkit",
        position: { x: 0, y: 0 },
        data: { label: id, code: "", inputs: [], outputs: [], limits: {}, extra: {} },
      }) as FlowNode,
  );
  return { nodes, edges: [] };
}

describe("History", () => {
  it("undoes and redoes whole graph states", () => {
    const history = new History();
    const one = graphWith("a");
    const two = graphWith("a", "b");
    history.record(one);
    expect(history.undo(two)).toEqual(one);
    expect(history.redo(one)).toEqual(two);
    expect(history.canRedo).toBe(false);
  });

  it("forgets the redo states after a new change", () => {
    const history = new History();
    history.record(graphWith("a"));
    history.undo(graphWith("a", "b"));
    history.record(graphWith("a"));
    expect(history.canRedo).toBe(false);
  });

  it("merges a burst of edits of one field into one step", () => {
    const history = new History();
    const before = graphWith("a");
    history.record(before, "a:code");
    history.record(graphWith("a", "typing"), "a:code");
    history.record(graphWith("a", "typing more"), "a:code");
    expect(history.undo(graphWith("a", "typed"))).toEqual(before);
    expect(history.canUndo).toBe(false);
  });

  it("skips recorded states equal to the present (a click that moved nothing)", () => {
    const history = new History();
    const first = graphWith("a");
    const present = graphWith("a", "b");
    history.record(first);
    history.record(present);
    expect(history.undo(present)).toEqual(first);
  });

  it("leaves selection out of history", () => {
    const history = new History();
    const selected = graphWith("a");
    selected.nodes[0].selected = true;
    history.record(selected);
    expect(history.undo(graphWith("a", "b"))?.nodes[0]).not.toHaveProperty("selected");
  });
});
