// A pipeline node on the canvas: one target handle per input port on the left, one
// source handle per output port on the right. Memoized: dragging one node must not
// re-render the others.

import { Handle, Position, type NodeProps } from "@xyflow/react";
import { memo } from "react";
import type { FlowNode } from "../document";
import { useNodeProblems } from "./problems";

const ROW = 22;
const TOP = 44;

function FlowkitNodeView({ id, data, selected }: NodeProps<FlowNode>) {
  const problems = useNodeProblems(id);
  const rows = Math.max(data.inputs.length, data.outputs.length, 1);
  return (
    <div
      className={`fk-node${selected ? " selected" : ""}${problems ? " has-problem" : ""}`}
      style={{ minHeight: TOP + rows * ROW + 8 }}
      aria-label={`node ${data.label}`}
    >
      <div className="fk-node-title">
        <strong>{data.label}</strong>
        <span className="fk-node-id">{id}</span>
        {data.limits.network ? (
          <span className="fk-badge" title="network access">
            net
          </span>
        ) : null}
      </div>
      {data.inputs.map((port, index) => (
        <div key={`in-${port.name}`} className="fk-port fk-port-in" style={{ top: TOP + index * ROW }}>
          <Handle type="target" position={Position.Left} id={port.name} className="fk-handle" />
          <span>
            {port.name}
            {port.list ? "[]" : ""}
          </span>
        </div>
      ))}
      {data.outputs.map((name, index) => (
        <div key={`out-${name}`} className="fk-port fk-port-out" style={{ top: TOP + index * ROW }}>
          <span>{name}</span>
          <Handle type="source" position={Position.Right} id={name} className="fk-handle" />
        </div>
      ))}
      {problems ? (
        <ul className="fk-node-problems" role="alert">
          {problems.map((message) => (
            <li key={message}>{message}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

export const FlowkitNode = memo(FlowkitNodeView);
export const NODE_TYPES = { flowkit: FlowkitNode };
