// The run's graph, read-only: the pipeline version's layout with each node coloured
// by its live state. Node objects are reused while their state and selection stay
// the same, so a state change re-renders one memoized node, not five hundred.

import {
  Background,
  Controls,
  Handle,
  MarkerType,
  MiniMap,
  Position,
  ReactFlow,
  type Edge,
  type Node,
  type NodeProps,
} from "@xyflow/react";
import { memo, useMemo, useRef } from "react";
import type { PipelineDocument } from "../document";
import { displayState, type NodeView } from "./runState";

type MonitorNodeData = { label: string; state: string; attempt: number };
export type MonitorFlowNode = Node<MonitorNodeData, "monitor">;

function MonitorNodeView({ id, data, selected }: NodeProps<MonitorFlowNode>) {
  return (
    <div
      className={`fk-mnode fk-mstate-${data.state}${selected ? " selected" : ""}`}
      data-state={data.state}
      aria-label={`node ${data.label}: ${data.state}`}
    >
      <Handle type="target" position={Position.Left} isConnectable={false} className="fk-mhandle" />
      <div className="fk-mnode-title">
        <strong>{data.label}</strong>
        <span className="fk-node-id">{id}</span>
      </div>
      <div className="fk-mnode-state">
        {data.state}
        {data.attempt > 1 ? ` · attempt ${data.attempt}` : ""}
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} className="fk-mhandle" />
    </div>
  );
}

const NODE_WIDTH = 180;
const NODE_HEIGHT = 48;
const MonitorNode = memo(MonitorNodeView);
const NODE_TYPES = { monitor: MonitorNode };

// One marker object for every edge: xyflow draws a marker definition per distinct value.
const ARROW = { type: MarkerType.ArrowClosed, width: 16, height: 16 };

interface Layout {
  nodes: { id: string; label: string; position: { x: number; y: number } }[];
  edges: Edge[];
}

export function layoutOf(document: PipelineDocument): Layout {
  return {
    nodes: document.nodes.map((node, index) => ({
      id: node.id,
      label: node.label ?? node.id,
      position: node.position ?? { x: 250 * index, y: 0 },
    })),
    // Ports are not drawn here: one edge per connection, node side to node side.
    edges: document.edges.map((edge, index) => ({
      id: edge.id ?? `e${index + 1}`,
      source: edge.source,
      target: edge.target,
      focusable: false,
      markerEnd: ARROW,
    })),
  };
}

interface Props {
  layout: Layout;
  states: Record<string, NodeView>;
  selected: string | null;
  onSelect: (nodeId: string | null) => void;
}

// Memoized: the page re-renders every second for the timeline's clock, the graph
// only when a node's state, the selection or the layout changes.
export const RunGraph = memo(function RunGraph({ layout, states, selected, onSelect }: Props) {
  const cache = useRef(new Map<string, MonitorFlowNode>());
  const nodes = useMemo(() => {
    const next = new Map<string, MonitorFlowNode>();
    const list = layout.nodes.map((base) => {
      const live = states[base.id];
      const state = displayState(live);
      const attempt = live?.attempt ?? 0;
      const isSelected = base.id === selected;
      const known = cache.current.get(base.id);
      const node: MonitorFlowNode =
        known &&
        known.data.state === state &&
        known.data.attempt === attempt &&
        Boolean(known.selected) === isSelected &&
        known.position === base.position
          ? known
          : {
              id: base.id,
              type: "monitor",
              position: base.position,
              data: { label: base.label, state, attempt },
              selected: isSelected,
              // Known sizes (see .fk-mnode) let the minimap and fit view work without
              // feeding xyflow's measurements back through onNodesChange.
              width: NODE_WIDTH,
              height: NODE_HEIGHT,
              draggable: false,
              connectable: false,
            };
      next.set(base.id, node);
      return node;
    });
    cache.current = next;
    return list;
  }, [layout, states, selected]);

  return (
    <ReactFlow
      nodes={nodes}
      edges={layout.edges}
      nodeTypes={NODE_TYPES}
      onNodeClick={(_, node) => onSelect(node.id)}
      onPaneClick={() => onSelect(null)}
      nodesDraggable={false}
      nodesConnectable={false}
      elementsSelectable={false}
      deleteKeyCode={null}
      fitView
      fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
      onlyRenderVisibleElements
      minZoom={0.05}
      aria-label="Run graph"
    >
      <Background />
      <Controls showInteractive={false} />
      <MiniMap
        pannable
        zoomable
        ariaLabel="Minimap"
        nodeClassName={(node) => `fk-mini-${String(node.data.state)}`}
      />
    </ReactFlow>
  );
});
