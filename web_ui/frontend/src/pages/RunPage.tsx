// A run's state and its nodes' states, refreshed until the run ends. A stand-in:
// the live monitor (issue 5) replaces it.

import { useEffect, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { api, messageOf, type RunDetail } from "../api";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export function RunPage() {
  const { runId = "" } = useParams();
  const [run, setRun] = useState<RunDetail | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let timer = 0;
    let alive = true;
    async function poll() {
      try {
        const current = await api.getRun(runId);
        if (!alive) return;
        setRun(current);
        setError(null);
        if (FINISHED.has(current.state)) return;
      } catch (exc) {
        if (!alive) return;
        setError(messageOf(exc));
      }
      timer = window.setTimeout(poll, 1000);
    }
    void poll();
    return () => {
      alive = false;
      window.clearTimeout(timer);
    };
  }, [runId]);

  if (!run) {
    return error ? (
      <p className="fk-error" role="alert">
        {error}
      </p>
    ) : (
      <p className="fk-muted">Loading…</p>
    );
  }
  return (
    <section className="fk-page">
      <h1>
        Run of <Link to={`/app/pipelines/${run.pipeline_id}`}>{run.pipeline_name}</Link> v{run.version}
      </h1>
      <p>
        State:{" "}
        <strong className={`fk-state fk-state-${run.state}`} data-testid="run-state">
          {run.state}
        </strong>
        {run.reason ? ` — ${run.reason}` : ""}
      </p>
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      <table className="fk-table">
        <thead>
          <tr>
            <th>Node</th>
            <th>State</th>
            <th>Attempt</th>
            <th>Message</th>
          </tr>
        </thead>
        <tbody>
          {run.nodes.map((node) => (
            <tr key={node.node_id} data-node={node.node_id}>
              <td>{node.node_id}</td>
              <td>
                <span className={`fk-state fk-state-${node.state}`}>{node.state}</span>
                {node.reused ? " (reused)" : ""}
              </td>
              <td>{node.attempt}</td>
              <td>{node.error ? String(node.error.message ?? "") : node.status_message || node.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="fk-muted">
        The live monitor with logs, outputs and controls comes with the trace monitor.
      </p>
    </section>
  );
}
