// Validation problems of the last save, by node and edge, so the canvas can mark
// the culprits without putting them into the undo history.

import { createContext, useContext } from "react";
import type { Problem } from "../document";

export interface ProblemIndex {
  nodes: ReadonlyMap<string, string[]>;
  edges: ReadonlyMap<string, string[]>;
  general: string[];
}

export const NO_PROBLEMS: ProblemIndex = { nodes: new Map(), edges: new Map(), general: [] };

export function indexProblems(problems: readonly Problem[]): ProblemIndex {
  const nodes = new Map<string, string[]>();
  const edges = new Map<string, string[]>();
  const general: string[] = [];
  for (const problem of problems) {
    if (problem.node) nodes.set(problem.node, [...(nodes.get(problem.node) ?? []), problem.message]);
    else if (problem.edge) edges.set(problem.edge, [...(edges.get(problem.edge) ?? []), problem.message]);
    else general.push(problem.message);
  }
  return { nodes, edges, general };
}

export const ProblemsContext = createContext<ProblemIndex>(NO_PROBLEMS);

export function useNodeProblems(id: string): string[] | undefined {
  return useContext(ProblemsContext).nodes.get(id);
}
