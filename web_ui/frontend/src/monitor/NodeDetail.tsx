// The side panel of the monitor for one node: what it was given, what it returned
// (capped values keep a preview and a link to the whole value), its log, error and
// traceback, its attempts, and its CPU and memory over time.

import { memo, useEffect, useRef } from "react";
import { nodeValueUrl } from "../api";
import { formatBytes, formatPercent, LineChart, type Point } from "./LineChart";
import {
  MAX_LOG_LINES,
  displayState,
  type Execution,
  type LogLine,
  type NodeView,
  type Sample,
  type Truncated,
} from "./runState";

interface Props {
  runId: string;
  node: NodeView;
  label: string;
  logs: readonly LogLine[] | undefined;
  samples: readonly Sample[] | undefined;
  attempts: readonly Execution[];
  loading: boolean;
  canRerun: boolean;
  busy: boolean;
  onRerun: () => void;
  onClose: () => void;
}

function Values({
  title,
  runId,
  nodeId,
  direction,
  values,
  truncated,
}: {
  title: string;
  runId: string;
  nodeId: string;
  direction: "inputs" | "outputs";
  values: Record<string, unknown> | null;
  truncated: Truncated | undefined;
}) {
  const ports = Object.keys(values ?? {});
  const cut = Object.entries(truncated ?? {});
  return (
    <section aria-label={title} data-testid={`node-${direction}`}>
      <h3>{title}</h3>
      {values === null && !cut.length ? <p className="fk-muted">None yet.</p> : null}
      {values !== null && !ports.length && !cut.length ? <p className="fk-muted">No values.</p> : null}
      {ports.map((port) => (
        <div key={port} className="fk-value">
          <h4>
            {port}{" "}
            <a href={nodeValueUrl(runId, nodeId, direction, port)} download>
              download
            </a>
          </h4>
          <pre>{JSON.stringify(values?.[port], null, 2)}</pre>
        </div>
      ))}
      {cut.map(([port, value]) => (
        <div key={port} className="fk-value">
          <h4>
            {port} <span className="fk-muted">({formatBytes(value.bytes)}, preview of the start) </span>
            <a href={nodeValueUrl(runId, nodeId, direction, port)} download>
              download the whole value
            </a>
          </h4>
          <pre>{value.preview}…</pre>
        </div>
      ))}
    </section>
  );
}

function Logs({ lines, loading }: { lines: readonly LogLine[] | undefined; loading: boolean }) {
  const box = useRef<HTMLPreElement>(null);
  const count = lines?.length ?? 0;
  useEffect(() => {
    // Follow the end of the log, as a terminal does.
    const element = box.current;
    if (element) element.scrollTop = element.scrollHeight;
  }, [count]);
  if (!count) return <p className="fk-muted">{loading ? "Loading the log…" : "No log lines."}</p>;
  return (
    <>
      {count >= MAX_LOG_LINES ? (
        <p className="fk-muted">The page keeps the last {MAX_LOG_LINES} lines; the API has them all.</p>
      ) : null}
      <pre ref={box} className="fk-log" data-testid="node-logs" tabIndex={0} aria-label="Log lines">
        {lines?.map((line) => (
          <span key={line.seq} className={line.dropped ? "fk-log-dropped" : `fk-log-${line.level}`}>
            {line.attempt > 1 ? `[#${line.attempt}] ` : ""}
            {line.message}
            {"\n"}
          </span>
        ))}
      </pre>
    </>
  );
}

function seriesOf(samples: readonly Sample[] | undefined, pick: (sample: Sample) => number | null): Point[] {
  const points: Point[] = [];
  for (const sample of samples ?? []) {
    const value = pick(sample);
    if (value !== null && value !== undefined) points.push({ t: Date.parse(sample.at), v: value });
  }
  return points;
}

function NodeDetailView(props: Props) {
  const { runId, node, label, logs, samples, attempts, loading } = props;
  const state = displayState(node);
  const memoryLimit = samples?.length
    ? (samples[samples.length - 1].memory_limit_bytes ?? undefined)
    : undefined;
  return (
    <aside className="fk-panel fk-monitor-panel" aria-label="Selected node">
      <div className="fk-inline fk-panel-head">
        <h2>
          {label} <code>{node.node_id}</code>
        </h2>
        <button
          type="button"
          className="fk-secondary"
          onClick={props.onClose}
          aria-label="Close node details"
        >
          ×
        </button>
      </div>
      <p>
        <span className={`fk-state fk-state-${node.state}`} data-testid="node-state">
          {state}
        </span>{" "}
        attempt {node.attempt}
        {node.worker ? ` on ${node.worker}` : ""}
        {node.infra_retries
          ? ` (retried ${node.infra_retries} × after the Docker engine was away; the node's own retries untouched)`
          : ""}
      </p>
      {node.status_message ? <p data-testid="node-status">{node.status_message}</p> : null}
      {node.reason ? <p className="fk-muted">{node.reason}</p> : null}
      {props.canRerun ? (
        <button type="button" onClick={props.onRerun} disabled={props.busy}>
          Rerun from this node
        </button>
      ) : null}
      {node.error ? (
        <section aria-label="Error" className="fk-node-error">
          <h3>Error</h3>
          <p className="fk-error" role="alert">
            {node.error.error_type ? <strong>{node.error.error_type}: </strong> : null}
            {node.error.message ?? ""}
          </p>
          {node.error.traceback ? <pre data-testid="node-traceback">{node.error.traceback}</pre> : null}
        </section>
      ) : null}
      <Values
        title="Outputs"
        runId={runId}
        nodeId={node.node_id}
        direction="outputs"
        values={node.outputs}
        truncated={node.truncated?.outputs}
      />
      <Values
        title="Inputs"
        runId={runId}
        nodeId={node.node_id}
        direction="inputs"
        values={node.inputs}
        truncated={node.truncated?.inputs}
      />
      <h3>Log{node.dropped_log_lines ? ` (${node.dropped_log_lines} lines dropped)` : ""}</h3>
      <Logs lines={logs} loading={loading} />
      <h3>Resources</h3>
      <LineChart title="CPU" points={seriesOf(samples, (s) => s.cpu_percent)} format={formatPercent} />
      <LineChart
        title={memoryLimit ? `Memory (limit ${formatBytes(memoryLimit)})` : "Memory"}
        points={seriesOf(samples, (s) => s.memory_bytes)}
        format={formatBytes}
      />
      <h3>Attempts</h3>
      {attempts.length ? (
        <table className="fk-table fk-compact" aria-label="Attempts">
          <thead>
            <tr>
              <th>#</th>
              <th>Outcome</th>
              <th>Duration</th>
              <th>CPU peak</th>
              <th>Memory peak</th>
            </tr>
          </thead>
          <tbody>
            {attempts.map((attempt) => (
              <tr key={attempt.attempt}>
                <td>{attempt.attempt}</td>
                <td>
                  {attempt.outcome || "running"}
                  {attempt.error_type ? ` (${attempt.error_type})` : ""}
                </td>
                <td>{attempt.duration_s !== null ? `${attempt.duration_s.toFixed(2)} s` : "…"}</td>
                <td>{attempt.cpu_percent_max != null ? formatPercent(attempt.cpu_percent_max) : "–"}</td>
                <td>{attempt.memory_bytes_max != null ? formatBytes(attempt.memory_bytes_max) : "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p className="fk-muted">
          {node.reused ? "Reused from the earlier run: not executed here." : "Not executed yet."}
        </p>
      )}
    </aside>
  );
}

export const NodeDetail = memo(NodeDetailView);
