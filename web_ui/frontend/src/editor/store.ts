// The editor page's one store: the graph on the canvas, its undo history, the
// validation problems of the last save, and every action the page can take.
// Actions are stable functions reading refs, so memoized children never re-render
// because a handler changed.

import {
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type Edge,
  type EdgeChange,
  type NodeChange,
  type XYPosition,
} from "@xyflow/react";
import { useMemo, useRef, useState } from "react";
import { api, ApiError, messageOf, type PipelineDetail } from "../api";
import {
  formsCycle,
  freshEdgeId,
  freshNodeId,
  toDocument,
  toGraph,
  type FlowNode,
  type FlowNodeData,
  type Graph,
  type PipelineDocument,
} from "../document";
import { History } from "./history";
import { layoutNodes } from "./layout";
import { indexProblems, NO_PROBLEMS, type ProblemIndex } from "./problems";
import type { NodeTemplate } from "./templates";

export interface Notice {
  kind: "info" | "error";
  text: string;
}

const PASTE_OFFSET = 40;

function deselected<T extends { selected?: boolean }>(items: readonly T[]): T[] {
  return items.map((item) => (item.selected ? { ...item, selected: false } : item));
}

function withoutDanglingEdges(graph: Graph): Graph {
  const ports = new Map(
    graph.nodes.map((node) => [
      node.id,
      { inputs: new Set(node.data.inputs.map((port) => port.name)), outputs: new Set(node.data.outputs) },
    ]),
  );
  const edges = graph.edges.filter((edge) => {
    const source = ports.get(edge.source);
    const target = ports.get(edge.target);
    return Boolean(
      source?.outputs.has(edge.sourceHandle ?? "") && target?.inputs.has(edge.targetHandle ?? ""),
    );
  });
  return edges.length === graph.edges.length ? graph : { ...graph, edges };
}

const NODE_BOX = { width: 200, height: 100 };

/** The first place at or below `start` where a new node covers no existing one. */
function freePosition(nodes: readonly FlowNode[], start: XYPosition): XYPosition {
  const position = { ...start };
  const overlaps = () =>
    nodes.some((node) => {
      const width = node.measured?.width ?? NODE_BOX.width;
      const height = node.measured?.height ?? NODE_BOX.height;
      return (
        position.x < node.position.x + width &&
        node.position.x < position.x + NODE_BOX.width &&
        position.y < node.position.y + height &&
        node.position.y < position.y + NODE_BOX.height
      );
    });
  for (let tries = 0; tries < 200 && overlaps(); tries += 1) position.y += 40;
  return position;
}

export function useEditorStore(pipeline: PipelineDetail) {
  const flow = useReactFlow<FlowNode, Edge>();
  const [graph, setGraphState] = useState<Graph>(() => toGraph(pipeline.document));
  const [dirty, setDirtyState] = useState(false);
  const [problems, setProblems] = useState<ProblemIndex>(NO_PROBLEMS);
  const [notice, setNotice] = useState<Notice | null>(null);
  const [version, setVersion] = useState<number | null>(pipeline.latest_version);
  const [busy, setBusy] = useState(false);
  const [, setHistoryTick] = useState(0);

  const graphRef = useRef(graph);
  const dirtyRef = useRef(false);
  const changeCount = useRef(0);
  const history = useRef(new History());
  const clipboard = useRef<Graph | null>(null);
  const base = useRef<PipelineDocument | null>(pipeline.document);
  const versionRef = useRef(version);

  const actions = useMemo(() => {
    function setGraph(next: Graph) {
      graphRef.current = next;
      setGraphState(next);
    }

    function markDirty() {
      changeCount.current += 1;
      dirtyRef.current = true;
      setDirtyState(true);
    }

    /** Apply a change to the graph as one undo step; coalesceKey merges a burst of edits of one field. */
    function commit(update: (current: Graph) => Graph, coalesceKey: string | null = null) {
      const current = graphRef.current;
      const next = update(current);
      if (next === current) return;
      history.current.record(current, coalesceKey);
      setGraph(next);
      markDirty();
      setHistoryTick((tick) => tick + 1);
    }

    function restore(next: Graph | null) {
      if (!next) return;
      // Keep what is selected, so undoing a code edit leaves its node open in the panel.
      const selectedIds = new Set(
        graphRef.current.nodes.filter((node) => node.selected).map((node) => node.id),
      );
      setGraph({
        ...next,
        nodes: next.nodes.map((node) => (selectedIds.has(node.id) ? { ...node, selected: true } : node)),
      });
      markDirty();
      setHistoryTick((tick) => tick + 1);
    }

    function addNode(template: NodeTemplate, position: XYPosition) {
      commit((current) => {
        const id = freshNodeId(template.key, new Set(current.nodes.map((node) => node.id)));
        const node: FlowNode = {
          id,
          type: "flowkit",
          position,
          selected: true,
          data: {
            label: template.label,
            code: template.code,
            inputs: template.inputs.map((port) => ({ ...port })),
            outputs: [...template.outputs],
            limits: { ...template.limits },
            extra: {},
          },
        };
        return { nodes: [...deselected(current.nodes), node], edges: deselected(current.edges) };
      });
      setNotice(null);
    }

    function addNodeAtCentre(template: NodeTemplate) {
      const pane = document.querySelector(".fk-canvas")?.getBoundingClientRect();
      const centre = pane
        ? flow.screenToFlowPosition({ x: pane.left + pane.width / 2, y: pane.top + pane.height / 2 })
        : { x: 0, y: 0 };
      addNode(template, freePosition(graphRef.current.nodes, { x: centre.x - 100, y: centre.y - 45 }));
    }

    function onNodesChange(changes: NodeChange<FlowNode>[]) {
      const next = { ...graphRef.current, nodes: applyNodeChanges(changes, graphRef.current.nodes) };
      setGraph(next);
      if (changes.some((change) => change.type === "position" && change.position)) markDirty();
    }

    function onEdgesChange(changes: EdgeChange<Edge>[]) {
      setGraph({ ...graphRef.current, edges: applyEdgeChanges(changes, graphRef.current.edges) });
    }

    function onNodeDragStart() {
      // The state before the drag is the undo step of the move.
      history.current.record(graphRef.current);
      setHistoryTick((tick) => tick + 1);
    }

    function onConnect(connection: Connection) {
      const current = graphRef.current;
      const { source, target, sourceHandle, targetHandle } = connection;
      if (formsCycle(current.edges, source, target)) {
        setNotice({
          kind: "error",
          text: `Connection refused: ${source} → ${target} would form a cycle (pipelines are acyclic).`,
        });
        return;
      }
      const port = current.nodes
        .find((node) => node.id === target)
        ?.data.inputs.find((p) => p.name === targetHandle);
      const taken = current.edges.some(
        (edge) => edge.target === target && edge.targetHandle === targetHandle,
      );
      if (port && !port.list && taken) {
        setNotice({
          kind: "error",
          text: `Connection refused: input ${target}.${targetHandle} is already connected; name it ${targetHandle}[] to collect several values.`,
        });
        return;
      }
      commit((graph) => ({
        ...graph,
        edges: [
          ...graph.edges,
          {
            id: freshEdgeId(new Set(graph.edges.map((edge) => edge.id))),
            source,
            sourceHandle,
            target,
            targetHandle,
          },
        ],
      }));
      setNotice(null);
    }

    function updateNode(id: string, patch: Partial<FlowNodeData>, coalesceKey: string) {
      commit(
        (current) =>
          withoutDanglingEdges({
            ...current,
            nodes: current.nodes.map((node) =>
              node.id === id ? { ...node, data: { ...node.data, ...patch } } : node,
            ),
          }),
        `${id}:${coalesceKey}`,
      );
    }

    function disconnect(edgeId: string) {
      commit((current) => ({ ...current, edges: current.edges.filter((edge) => edge.id !== edgeId) }));
    }

    function deleteSelected() {
      const current = graphRef.current;
      const gone = new Set(current.nodes.filter((node) => node.selected).map((node) => node.id));
      if (!gone.size && !current.edges.some((edge) => edge.selected)) return;
      commit(() => ({
        nodes: current.nodes.filter((node) => !gone.has(node.id)),
        edges: current.edges.filter(
          (edge) => !edge.selected && !gone.has(edge.source) && !gone.has(edge.target),
        ),
      }));
    }

    /** Copy the selected nodes and the edges between them; false when nothing is selected. */
    function copy(): boolean {
      const current = graphRef.current;
      const nodes = current.nodes.filter((node) => node.selected);
      const ids = new Set(nodes.map((node) => node.id));
      if (!nodes.length) return false;
      clipboard.current = {
        nodes,
        edges: current.edges.filter((edge) => ids.has(edge.source) && ids.has(edge.target)),
      };
      setNotice({ kind: "info", text: `Copied ${nodes.length} node${nodes.length === 1 ? "" : "s"}.` });
      return true;
    }

    /** Paste what copy() took, with fresh ids, beside the originals; false when nothing was copied. */
    function paste(): boolean {
      const copied = clipboard.current;
      if (!copied) return false;
      commit((current) => {
        const taken = new Set(current.nodes.map((node) => node.id));
        const renamed = new Map<string, string>();
        const nodes = copied.nodes.map((node) => {
          const id = freshNodeId(node.id, taken);
          taken.add(id);
          renamed.set(node.id, id);
          return {
            ...node,
            id,
            selected: true,
            position: { x: node.position.x + PASTE_OFFSET, y: node.position.y + PASTE_OFFSET },
            data: {
              ...node.data,
              inputs: node.data.inputs.map((port) => ({ ...port })),
              limits: { ...node.data.limits },
            },
          };
        });
        const edgeIds = new Set(current.edges.map((edge) => edge.id));
        const edges = copied.edges.map((edge) => {
          const id = freshEdgeId(edgeIds);
          edgeIds.add(id);
          return {
            ...edge,
            id,
            selected: false,
            source: renamed.get(edge.source) as string,
            target: renamed.get(edge.target) as string,
          };
        });
        return {
          nodes: [...deselected(current.nodes), ...nodes],
          edges: [...deselected(current.edges), ...edges],
        };
      });
      return true;
    }

    function autoLayout() {
      commit((current) => ({ ...current, nodes: layoutNodes(current.nodes, current.edges) }));
      window.requestAnimationFrame(() => void flow.fitView({ padding: 0.2 }));
    }

    async function save(): Promise<boolean> {
      const document = toDocument(graphRef.current, base.current);
      const countAtStart = changeCount.current;
      setBusy(true);
      try {
        const saved = await api.saveDocument(pipeline.id, document);
        base.current = document;
        versionRef.current = saved.number;
        setVersion(saved.number);
        setProblems(NO_PROBLEMS);
        // An edit made while the request was out is still unsaved.
        if (changeCount.current === countAtStart) {
          dirtyRef.current = false;
          setDirtyState(false);
        }
        setNotice({ kind: "info", text: `Saved version ${saved.number}.` });
        return true;
      } catch (exc) {
        if (exc instanceof ApiError && exc.problems.length) {
          setProblems(indexProblems(exc.problems));
          const count = exc.problems.length;
          setNotice({
            kind: "error",
            text: `Not saved: ${count} problem${count === 1 ? "" : "s"} to fix (marked in red on the canvas).`,
          });
        } else {
          setNotice({ kind: "error", text: `Not saved: ${messageOf(exc)}` });
        }
        return false;
      } finally {
        setBusy(false);
      }
    }

    async function run(input: unknown): Promise<string | null> {
      if ((dirtyRef.current || versionRef.current === null) && !(await save())) return null;
      setBusy(true);
      try {
        return (await api.startRun(pipeline.id, input)).id;
      } catch (exc) {
        setNotice({ kind: "error", text: `The run did not start: ${messageOf(exc)}` });
        return null;
      } finally {
        setBusy(false);
      }
    }

    return {
      addNode,
      addNodeAtCentre,
      onNodesChange,
      onEdgesChange,
      onNodeDragStart,
      onConnect,
      updateNode,
      disconnect,
      deleteSelected,
      copy,
      paste,
      autoLayout,
      save,
      run,
      undo: () => restore(history.current.undo(graphRef.current)),
      redo: () => restore(history.current.redo(graphRef.current)),
      isDirty: () => dirtyRef.current,
    };
  }, [flow, pipeline.id]);

  return {
    ...actions,
    flow,
    graph,
    dirty,
    problems,
    notice,
    setNotice,
    version,
    busy,
    canUndo: history.current.canUndo,
    canRedo: history.current.canRedo,
  };
}

export type EditorStore = ReturnType<typeof useEditorStore>;
