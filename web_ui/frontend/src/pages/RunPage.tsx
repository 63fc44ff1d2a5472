// The run monitor: the run's graph with live node states, the clicked node's
// inputs, outputs, log, error, attempts and resource charts, a timeline of the node
// executions, and the run's controls (editors only). Live state comes from
// /ws/runs/<id>/ through monitor/useRunStream and monitor/runState's reducer.

import { memo, useCallback, useEffect, useMemo, useReducer, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { messageOf, traceApi, type RunSummary } from "../api";
import { layoutOf, RunGraph } from "../monitor/RunGraph";
import { NodeDetail } from "../monitor/NodeDetail";
import {
  displayState,
  initialMonitorState,
  monitorReducer,
  nodeMatches,
  TERMINAL_RUN_STATES,
  timelineOf,
  type NodeView,
} from "../monitor/runState";
import { Timeline } from "../monitor/Timeline";
import { useRunStream, type Connection } from "../monitor/useRunStream";
import { canEdit, useMe } from "../session";

// A node's log is read back in pages of the API's largest size, up to this many.
const LOG_PAGES = 5;
// After an execution finishes, the timeline is read again once things settle.
const TIMELINE_REFRESH_MS = 1500;

export function RunPage() {
  const { runId = "" } = useParams();
  // A new run (restart, rerun) starts from nothing: a fresh stream and store.
  return <RunMonitor key={runId} runId={runId} />;
}

function ConnectionBadge({ connection }: { connection: Connection }) {
  const text = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    refused: "disconnected",
  }[connection.status];
  return (
    <span
      className={`fk-stream fk-stream-${connection.status}`}
      data-testid="connection"
      role="status"
      title={connection.message || undefined}
    >
      {text}
    </span>
  );
}

const NodeRow = memo(function NodeRow({
  node,
  nodeId,
  label,
  selected,
  onSelect,
}: {
  node: NodeView | undefined;
  nodeId: string;
  label: string;
  selected: boolean;
  onSelect: (nodeId: string) => void;
}) {
  const state = displayState(node);
  const message = node?.error
    ? `${node.error.error_type ? `${node.error.error_type}: ` : ""}${node.error.message ?? ""}`
    : node?.status_message || node?.reason || "";
  return (
    <tr data-node={nodeId} className={selected ? "selected" : undefined}>
      <td>
        <button type="button" className="fk-link" aria-pressed={selected} onClick={() => onSelect(nodeId)}>
          {label}
        </button>{" "}
        {label !== nodeId ? <code>{nodeId}</code> : null}
      </td>
      <td>
        <span className={`fk-state fk-state-${state}`}>{state}</span>
      </td>
      <td>{node?.attempt ?? 0}</td>
      <td className="fk-message">{message}</td>
    </tr>
  );
});

function useNow(ticking: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!ticking) return;
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [ticking]);
  return now;
}

function RunMonitor({ runId }: { runId: string }) {
  const me = useMe();
  const editable = canEdit(me.role);
  const navigate = useNavigate();
  const [state, dispatch] = useReducer(monitorReducer, initialMonitorState);
  const connection = useRunStream(runId, dispatch);
  const [layout, setLayout] = useState<ReturnType<typeof layoutOf> | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [loadingNode, setLoadingNode] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // What the last control did, shown while the run is still in the state it reported.
  const [notice, setNotice] = useState<{ text: string; state: string } | null>(null);
  const [confirmCancel, setConfirmCancel] = useState(false);
  const run = state.run;
  const finished = run ? TERMINAL_RUN_STATES.has(run.state) : false;
  const now = useNow(Boolean(run) && !finished);

  const pipelineId = run?.pipeline_id;
  const versionNumber = run?.version;
  useEffect(() => {
    if (!pipelineId || versionNumber === undefined) return;
    let alive = true;
    traceApi.version(pipelineId, versionNumber).then(
      (version) => alive && setLayout(layoutOf(version.document)),
      (exc) => alive && setError(`The run's graph cannot be drawn: ${messageOf(exc)}`),
    );
    return () => {
      alive = false;
    };
  }, [pipelineId, versionNumber]);

  // Executions that started before this page connected; later ones come live. Read
  // again after each reconnect, and shortly after executions finish: their CPU and
  // memory peaks are saved on the execution after its "finished" event.
  const finishedExecutions = useMemo(
    () => Object.values(state.executions).filter((execution) => execution.finished_at).length,
    [state.executions],
  );
  const live = connection.status === "live";
  useEffect(() => {
    if (!live) return;
    let alive = true;
    const timer = window.setTimeout(
      () =>
        traceApi.timeline(runId).then(
          (executions) => alive && dispatch({ type: "timeline", executions }),
          (exc) => alive && setError(messageOf(exc)),
        ),
      finishedExecutions ? TIMELINE_REFRESH_MS : 0,
    );
    return () => {
      alive = false;
      window.clearTimeout(timer);
    };
  }, [runId, live, finishedExecutions]);

  // The selected node's log and samples from before the stream's snapshot.
  useEffect(() => {
    if (!selected) return;
    let alive = true;
    const nodeId = selected;
    setLoadingNode(true);
    async function load() {
      let after = 0;
      for (let page = 0; page < LOG_PAGES && alive; page += 1) {
        const answer = await traceApi.events(runId, {
          after,
          node: nodeId,
          kind: ["log", "logs_dropped"],
          limit: 1000,
        });
        if (!alive) return;
        dispatch({ type: "logs", nodeId, events: answer.events });
        if (!answer.more || !answer.events.length) break;
        after = answer.events[answer.events.length - 1].seq;
      }
      const samples = await traceApi.nodeResources(runId, nodeId);
      if (alive) dispatch({ type: "resources", nodeId, samples });
    }
    load().then(
      () => alive && setLoadingNode(false),
      (exc) => {
        if (!alive) return;
        setLoadingNode(false);
        setError(messageOf(exc));
      },
    );
    return () => {
      alive = false;
    };
  }, [runId, selected]);

  const act = useCallback(
    async (what: string, call: () => Promise<RunSummary>, opensNewRun: boolean) => {
      setBusy(true);
      setError(null);
      setNotice(null);
      try {
        const answer = await call();
        if (opensNewRun) navigate(`/app/runs/${answer.id}`);
        else setNotice({ text: `${what}: the run is ${answer.state}.`, state: answer.state });
      } catch (exc) {
        setError(`${what} failed: ${messageOf(exc)}`);
      } finally {
        setBusy(false);
      }
    },
    [navigate],
  );

  const labels = useMemo(() => {
    const byId = new Map<string, string>();
    for (const node of layout?.nodes ?? []) byId.set(node.id, node.label);
    return byId;
  }, [layout]);
  const [filter, setFilter] = useState("");
  const nodeIds = useMemo(() => {
    const all = layout ? layout.nodes.map((node) => node.id) : Object.keys(state.nodes).sort();
    if (!filter.trim()) return all;
    return all.filter((nodeId) =>
      nodeMatches(filter, nodeId, labels.get(nodeId) ?? nodeId, displayState(state.nodes[nodeId])),
    );
  }, [layout, state.nodes, labels, filter]);
  const timeline = useMemo(() => timelineOf(state.executions), [state.executions]);
  const attempts = useMemo(
    () =>
      timeline.filter((execution) => execution.node_id === selected).sort((a, b) => a.attempt - b.attempt),
    [timeline, selected],
  );
  const select = useCallback((nodeId: string | null) => setSelected(nodeId), []);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") setSelected(null);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  if (!run) {
    return connection.status === "refused" ? (
      <p className="fk-error" role="alert">
        {connection.message}
      </p>
    ) : (
      <p className="fk-muted">Loading the run…</p>
    );
  }

  const selectedNode = selected ? (state.nodes[selected] ?? null) : null;
  return (
    <section className="fk-monitor" aria-label="Run monitor">
      <div className="fk-toolbar fk-editor-toolbar" role="toolbar" aria-label="Run">
        <h1>
          Run of <Link to={`/app/pipelines/${run.pipeline_id}`}>{run.pipeline}</Link> v{run.version}
        </h1>
        <strong className={`fk-state fk-state-${run.state}`} data-testid="run-state">
          {run.state}
        </strong>
        {run.reason ? <span className="fk-muted">{run.reason}</span> : null}
        {run.rerun_from ? (
          <span className="fk-muted">
            rerun from <code>{run.rerun_from}</code>
          </span>
        ) : null}
        <ConnectionBadge connection={connection} />
        <span className="fk-spacer" />
        {editable ? (
          <div className="fk-inline" role="group" aria-label="Run controls">
            {run.state === "running" ? (
              <button
                type="button"
                disabled={busy}
                onClick={() => void act("Pause", () => traceApi.pauseRun(runId), false)}
              >
                Pause
              </button>
            ) : null}
            {run.state === "paused" ? (
              <button
                type="button"
                disabled={busy}
                onClick={() => void act("Resume", () => traceApi.resumeRun(runId), false)}
              >
                Resume
              </button>
            ) : null}
            {!finished && !confirmCancel ? (
              <button
                type="button"
                className="fk-danger"
                disabled={busy}
                onClick={() => setConfirmCancel(true)}
              >
                Cancel
              </button>
            ) : null}
            {!finished && confirmCancel ? (
              // Cancelling kills running NPUs and cannot be undone: one more, deliberate press.
              <span className="fk-inline fk-confirm" role="group" aria-label="Confirm cancel">
                Stop this run?
                <button
                  type="button"
                  className="fk-danger"
                  disabled={busy}
                  autoFocus
                  onClick={() => {
                    setConfirmCancel(false);
                    void act("Cancel", () => traceApi.cancelRun(runId), false);
                  }}
                >
                  Cancel the run
                </button>
                <button type="button" className="fk-secondary" onClick={() => setConfirmCancel(false)}>
                  Keep running
                </button>
              </span>
            ) : null}
            <button
              type="button"
              disabled={busy}
              onClick={() => void act("Restart", () => traceApi.restartRun(runId), true)}
            >
              Restart
            </button>
          </div>
        ) : null}
        <Link to={`/app/runs?pipeline=${run.pipeline_id}`}>History</Link>
      </div>
      {connection.status !== "live" && connection.message ? (
        <p className="fk-notice" role="status">
          {connection.message}
        </p>
      ) : null}
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {notice && notice.state === run.state ? (
        <p className="fk-notice" role="status">
          {notice.text}
        </p>
      ) : null}
      <div className="fk-monitor-body">
        <div className="fk-monitor-main">
          <div className="fk-monitor-graph">
            {layout ? (
              <RunGraph layout={layout} states={state.nodes} selected={selected} onSelect={select} />
            ) : (
              <p className="fk-muted">Loading the graph…</p>
            )}
          </div>
          <div className="fk-monitor-bottom">
            <div className="fk-monitor-nodes">
              <label className="fk-inline fk-node-filter">
                Find nodes
                <input
                  type="search"
                  value={filter}
                  onChange={(event) => setFilter(event.target.value)}
                  placeholder="id, label or state"
                />
              </label>
              <table className="fk-table fk-compact" aria-label="Nodes">
                <thead>
                  <tr>
                    <th>Node</th>
                    <th>State</th>
                    <th>Attempt</th>
                    <th>Message</th>
                  </tr>
                </thead>
                <tbody>
                  {!nodeIds.length && filter ? (
                    <tr>
                      <td colSpan={4} className="fk-muted">
                        No node matches “{filter}”.
                      </td>
                    </tr>
                  ) : null}
                  {nodeIds.map((nodeId) => (
                    <NodeRow
                      key={nodeId}
                      nodeId={nodeId}
                      node={state.nodes[nodeId]}
                      label={labels.get(nodeId) ?? nodeId}
                      selected={nodeId === selected}
                      onSelect={select}
                    />
                  ))}
                </tbody>
              </table>
            </div>
            <div className="fk-monitor-timeline">
              <Timeline executions={timeline} now={now} selected={selected} onSelect={select} />
            </div>
          </div>
        </div>
        {selectedNode ? (
          <NodeDetail
            runId={runId}
            node={selectedNode}
            label={labels.get(selectedNode.node_id) ?? selectedNode.node_id}
            logs={state.logs[selectedNode.node_id]}
            samples={state.samples[selectedNode.node_id]}
            attempts={attempts}
            loading={loadingNode}
            canRerun={editable}
            busy={busy}
            onRerun={() => void act("Rerun", () => traceApi.rerunFrom(runId, selectedNode.node_id), true)}
            onClose={() => setSelected(null)}
          />
        ) : null}
      </div>
    </section>
  );
}
