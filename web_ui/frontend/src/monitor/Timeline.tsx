// Gantt-style bars, one per node execution (attempt), on the run's time axis.
// A bar still running grows to "now", which the page advances once a second.

import { memo } from "react";
import type { Execution } from "./runState";

interface Props {
  executions: readonly Execution[];
  now: number;
  selected: string | null;
  onSelect: (nodeId: string) => void;
}

function TimelineView({ executions, now, selected, onSelect }: Props) {
  if (!executions.length) return <p className="fk-muted">No node has started yet.</p>;
  const start = Math.min(...executions.map((e) => Date.parse(e.started_at)));
  const end = Math.max(
    start + 1000,
    ...executions.map((e) => (e.finished_at ? Date.parse(e.finished_at) : now)),
  );
  const span = end - start;
  return (
    <ol className="fk-timeline" aria-label="Timeline of node executions">
      {executions.map((execution) => {
        const from = Date.parse(execution.started_at);
        const to = execution.finished_at ? Date.parse(execution.finished_at) : now;
        const seconds = execution.duration_s ?? Math.max(0, (to - from) / 1000);
        const outcome = execution.outcome || (execution.finished_at ? "finished" : "running");
        return (
          <li
            key={`${execution.node_id}#${execution.attempt}`}
            className={execution.node_id === selected ? "selected" : undefined}
            data-execution={`${execution.node_id}#${execution.attempt}`}
          >
            <button type="button" className="fk-link" onClick={() => onSelect(execution.node_id)}>
              {execution.node_id}
              {execution.attempt > 1 ? ` #${execution.attempt}` : ""}
            </button>
            <span className="fk-timeline-track">
              <span
                className={`fk-timeline-bar fk-mstate-${outcome}`}
                style={{
                  left: `${((from - start) / span) * 100}%`,
                  width: `${Math.max(0.5, ((to - from) / span) * 100)}%`,
                }}
                title={`${execution.node_id} attempt ${execution.attempt}: ${outcome}, ${seconds.toFixed(2)} s`}
              />
            </span>
            <span className="fk-timeline-figure">
              {seconds.toFixed(1)} s {outcome}
            </span>
          </li>
        );
      })}
    </ol>
  );
}

export const Timeline = memo(TimelineView);
