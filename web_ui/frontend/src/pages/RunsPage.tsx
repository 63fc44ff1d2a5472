// The runs history: filters live in the URL (?pipeline=&state=&since=&until=), so a
// filtered list can be bookmarked and shared; with one pipeline chosen, its figures
// from the trace monitor (success rate, p50 / p95 per node, slowest nodes).

import { useCallback, useEffect, useState } from "react";
import { Link } from "react-router-dom";
import {
  api,
  messageOf,
  traceApi,
  type PipelineFigures,
  type PipelineSummary,
  type RunSummary,
} from "../api";
import { useUrlFilters } from "../urlFilters";

const STATES = ["queued", "running", "paused", "succeeded", "failed", "cancelled"];
const PAGE = 200;
const FILTERS = ["pipeline", "state", "since", "until"] as const;

function seconds(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

function durationOf(run: RunSummary): number | null {
  if (!run.started_at) return null;
  const end = run.finished_at ? Date.parse(run.finished_at) : Date.now();
  return (end - Date.parse(run.started_at)) / 1000;
}

/** A yyyy-mm-dd day of the person's calendar to the instant it starts. */
export function dayStart(day: string, plusDays = 0): string | undefined {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return undefined;
  return new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]) + plusDays).toISOString();
}

function Figures({ figures }: { figures: PipelineFigures }) {
  const slowest = new Set(figures.slowest_nodes);
  return (
    <section aria-label="Pipeline figures" className="fk-figures">
      <h2>Figures</h2>
      <dl className="fk-figure-list">
        <div>
          <dt>Runs</dt>
          <dd data-testid="figure-runs">{figures.runs}</dd>
        </div>
        <div>
          <dt>Success rate</dt>
          <dd data-testid="figure-success-rate">
            {figures.success_rate === null ? "–" : `${Math.round(figures.success_rate * 1000) / 10} %`}
          </dd>
        </div>
        <div>
          <dt>Run duration p50 / p95</dt>
          <dd>
            {seconds(figures.run_duration_p50_s)} / {seconds(figures.run_duration_p95_s)}
          </dd>
        </div>
        <div>
          <dt>By state</dt>
          <dd>
            {Object.entries(figures.runs_by_state)
              .map(([state, count]) => `${count} ${state}`)
              .join(", ") || "–"}
          </dd>
        </div>
      </dl>
      {figures.nodes.length ? (
        <table className="fk-table fk-compact" aria-label="Node durations">
          <thead>
            <tr>
              <th>Node</th>
              <th>Executions</th>
              <th>Failures</th>
              <th>p50</th>
              <th>p95</th>
              <th>Total</th>
            </tr>
          </thead>
          <tbody>
            {figures.nodes.map((node) => (
              <tr key={node.node_id} data-node={node.node_id}>
                <td>
                  <code>{node.node_id}</code>{" "}
                  {slowest.has(node.node_id) ? <span className="fk-badge">slowest</span> : null}
                </td>
                <td>{node.executions}</td>
                <td>{node.failures}</td>
                <td>{seconds(node.p50_s)}</td>
                <td>{seconds(node.p95_s)}</td>
                <td>{seconds(node.total_s)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p className="fk-muted">No node has finished an execution yet.</p>
      )}
      {figures.slowest_nodes.length ? (
        <p>
          Slowest nodes (by p95): <span data-testid="slowest-nodes">{figures.slowest_nodes.join(", ")}</span>
        </p>
      ) : null}
    </section>
  );
}

export function RunsPage() {
  const [pipelines, setPipelines] = useState<PipelineSummary[]>([]);
  const { values, form, apply, filtered } = useUrlFilters(FILTERS, [pipelines.length]);
  const { pipeline, state, since, until } = values;
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [more, setMore] = useState(false); // the last page was full: older runs may exist
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [figures, setFigures] = useState<PipelineFigures | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api.listPipelines().then(setPipelines, (exc) => setError(messageOf(exc)));
  }, []);

  const listPage = useCallback(
    (before?: string) =>
      traceApi.listRuns({
        pipeline: pipeline || undefined,
        state: state || undefined,
        since: since ? dayStart(since) : undefined,
        until: until ? dayStart(until, 1) : undefined,
        before,
        limit: PAGE,
      }),
    [pipeline, state, since, until],
  );

  useEffect(() => {
    let alive = true;
    setRuns(null);
    listPage().then(
      (answer) => {
        if (!alive) return;
        setRuns(answer);
        setMore(answer.length === PAGE);
        setError(null);
      },
      (exc) => alive && setError(messageOf(exc)),
    );
    return () => {
      alive = false;
    };
  }, [listPage]);

  function showOlder() {
    if (!runs?.length) return;
    setLoadingOlder(true);
    listPage(runs[runs.length - 1].id).then(
      (answer) => {
        setRuns((shown) => [...(shown ?? []), ...answer]);
        setMore(answer.length === PAGE);
        setLoadingOlder(false);
      },
      (exc) => {
        setError(messageOf(exc));
        setLoadingOlder(false);
      },
    );
  }

  useEffect(() => {
    let alive = true;
    setFigures(null);
    if (pipeline) {
      traceApi.figures(pipeline).then(
        (answer) => alive && setFigures(answer),
        (exc) => alive && setError(messageOf(exc)),
      );
    }
    return () => {
      alive = false;
    };
  }, [pipeline]);

  return (
    <section className="fk-page">
      <h1>Runs</h1>
      <form
        ref={form}
        className="fk-toolbar"
        onSubmit={apply}
        aria-label="Filter runs"
        onChange={(event) => event.currentTarget.requestSubmit()}
      >
        <label className="fk-inline">
          Pipeline
          <select name="pipeline" defaultValue={pipeline}>
            <option value="">all</option>
            {pipelines.map((item) => (
              <option key={item.id} value={item.id}>
                {item.name}
              </option>
            ))}
          </select>
        </label>
        <label className="fk-inline">
          State
          <select name="state" defaultValue={state}>
            <option value="">any</option>
            {STATES.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <label className="fk-inline">
          From
          <input type="date" name="since" defaultValue={since} />
        </label>
        <label className="fk-inline">
          To
          <input type="date" name="until" defaultValue={until} />
        </label>
        <button type="submit">Filter</button>
        {filtered ? <Link to="/app/runs">Clear filters</Link> : null}
      </form>
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {figures ? <Figures figures={figures} /> : null}
      {runs === null ? (
        <p className="fk-muted">Loading…</p>
      ) : runs.length === 0 ? (
        <p className="fk-empty">No runs match these filters.</p>
      ) : (
        <table className="fk-table" aria-label="Runs">
          <thead>
            <tr>
              <th>Started</th>
              <th>Pipeline</th>
              <th>Version</th>
              <th>State</th>
              <th>Duration</th>
              <th>Origin</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((run) => (
              <tr key={run.id} data-run={run.id}>
                <td>
                  <Link to={`/app/runs/${run.id}`}>{new Date(run.created_at).toLocaleString()}</Link>
                </td>
                <td>{run.pipeline_name}</td>
                <td>v{run.version}</td>
                <td>
                  <span className={`fk-state fk-state-${run.state}`}>{run.state}</span>
                  {run.reason ? <span className="fk-muted"> {run.reason}</span> : null}
                </td>
                <td>{seconds(durationOf(run))}</td>
                <td>
                  {run.source_run_id ? (
                    <Link to={`/app/runs/${run.source_run_id}`}>
                      {run.rerun_from ? `rerun from ${run.rerun_from}` : "restart"}
                    </Link>
                  ) : (
                    "started"
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {runs?.length ? (
        <p className="fk-muted" data-testid="runs-shown">
          {runs.length} runs shown{more ? "" : ", the oldest included"}.{" "}
          {more ? (
            <button type="button" className="fk-secondary" disabled={loadingOlder} onClick={showOlder}>
              {loadingOlder ? "Loading…" : "Show older runs"}
            </button>
          ) : null}
        </p>
      ) : null}
    </section>
  );
}
