// The resource monitor: every worker with its host's CPU, memory and network, and the
// NPUs it drives with their CPU, memory, network and pids, live from /ws/monitor/: its
// dedicated NPUs labelled with their pipeline and node (executions served, idle since,
// memory), then its warm and single-use ones. A dropped connection is retried with
// backoff; each connection starts with a fresh snapshot.
// Each worker shows what it offers (capabilities), its pool and the queue depth it
// sees, the autoscaler's recent decisions, and, for admins, a Drain button.

import { useEffect, useReducer, useState } from "react";
import { Link } from "react-router-dom";
import { api, messageOf } from "../api";
import { formatBytes, formatPercent } from "../monitor/LineChart";
import { retryDelayMs } from "../monitor/useRunStream";
import {
  idleText,
  initialResourceState,
  npuExecutions,
  npuKey,
  npusByKind,
  poolText,
  recentScaling,
  resourceReducer,
  scalingLine,
  sortedWorkers,
  type MonitorFrame,
  type Npu,
  type ResourceState,
  type Worker,
} from "../resources/resourceState";
import { useMe } from "../session";

function Bar({ label, fraction, text }: { label: string; fraction: number | null; text: string }) {
  const clamped = fraction === null ? 0 : Math.max(0, Math.min(1, fraction));
  return (
    <div className="fk-bar-row">
      <span className="fk-bar-label">{label}</span>
      <span
        className="fk-bar"
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(clamped * 100)}
        aria-valuetext={text}
      >
        <span
          className={`fk-bar-fill${clamped > 0.9 ? " high" : ""}`}
          style={{ width: `${clamped * 100}%` }}
        />
      </span>
      <span className="fk-bar-text">{text}</span>
    </div>
  );
}

function DrainButton({ worker }: { worker: Worker }) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  async function drain() {
    if (
      !window.confirm(`Drain ${worker.name}? It takes no new nodes, finishes its running ones, then exits.`)
    )
      return;
    setBusy(true);
    setError("");
    try {
      // The worker's next frames show draining, then stopped.
      await api.drainWorker(worker.name);
    } catch (exc) {
      setError(messageOf(exc));
    } finally {
      setBusy(false);
    }
  }
  return (
    <>
      <button type="button" onClick={drain} disabled={busy} aria-label={`Drain ${worker.name}`}>
        Drain
      </button>
      {error ? (
        <span className="fk-error" role="alert">
          {error}
        </span>
      ) : null}
    </>
  );
}

function Scaling({ worker }: { worker: Worker }) {
  const changes = recentScaling(worker);
  return (
    <>
      <p className="fk-muted" data-testid="pool">
        Pool: {poolText(worker)} · queue depth {worker.queue_depth ?? 0}
      </p>
      {changes.length ? (
        <ul className="fk-compact" aria-label={`Scaling of ${worker.name}`}>
          {changes.map((change) => (
            <li key={`${change.at}-${change.to}`}>
              {new Date(change.at).toLocaleTimeString()}: {scalingLine(change)}
            </li>
          ))}
        </ul>
      ) : null}
    </>
  );
}

function MemoryText({ used, limit }: { used: number | null | undefined; limit: number | null | undefined }) {
  if (used == null) return <>–</>;
  return (
    <>
      {formatBytes(used)}
      {limit ? ` of ${formatBytes(limit)}` : ""}
    </>
  );
}

function ExecutionLinks({ npu }: { npu: Npu }) {
  return (
    <>
      {npuExecutions(npu).map((execution, index) => (
        <span key={`${execution.run_id}/${execution.attempt}`}>
          {index ? ", " : ""}
          <Link to={`/app/runs/${execution.run_id}`}>
            run {execution.run_id.slice(0, 8)}
            {execution.attempt > 1 ? ` #${execution.attempt}` : ""}
          </Link>
        </span>
      ))}
    </>
  );
}

/** Each dedicated NPU of the worker, labelled with its pipeline (linked to its editor)
 * and node; rows of one pipeline stay together. */
function DedicatedNpus({
  worker,
  npus,
  latest,
}: {
  worker: Worker;
  npus: Npu[];
  latest: ResourceState["latest"];
}) {
  const now = Date.parse(worker.last_seen);
  return (
    <table className="fk-table fk-compact fk-npus" aria-label={`Dedicated NPUs of ${worker.name}`}>
      <thead>
        <tr>
          <th>Pipeline</th>
          <th>Node</th>
          <th>Container</th>
          <th>Executions</th>
          <th>Idle since</th>
          <th>CPU</th>
          <th>Memory</th>
        </tr>
      </thead>
      <tbody>
        {npus.map((npu) => {
          const executing = npuExecutions(npu);
          const first = executing[0];
          const sample = first ? latest[npuKey(first.run_id, first.node_id, first.attempt)] : undefined;
          return (
            <tr key={npu.container_id} data-npu={npu.container_id} data-kind="dedicated">
              <td className="fk-npu-pipeline" data-testid="npu-pipeline">
                {npu.pipeline_id ? (
                  <Link to={`/app/pipelines/${npu.pipeline_id}`} title={npu.pipeline_name ?? undefined}>
                    {npu.pipeline_name ?? npu.pipeline_id.slice(0, 8)}
                  </Link>
                ) : (
                  "–"
                )}
              </td>
              <td data-testid="npu-node">{npu.node_id ?? "–"}</td>
              <td>
                <code>{npu.container_id.slice(0, 12)}</code>
              </td>
              <td data-testid="npu-executions">{npu.executions ?? "–"}</td>
              <td data-testid="npu-idle">
                {executing.length ? (
                  <>
                    running: <ExecutionLinks npu={npu} />
                  </>
                ) : npu.idle_since ? (
                  <time dateTime={npu.idle_since} title={new Date(npu.idle_since).toLocaleString()}>
                    {new Date(npu.idle_since).toLocaleTimeString()} ({idleText(npu.idle_since, now)})
                  </time>
                ) : (
                  "–"
                )}
              </td>
              <td data-testid="npu-cpu">
                {sample?.cpu_percent != null ? formatPercent(sample.cpu_percent) : "–"}
              </td>
              <td data-testid="npu-memory">
                <MemoryText used={npu.memory_bytes} limit={npu.memory_limit_bytes} />
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** Warm NPUs waiting in the worker's pool and single-use ones, with their live samples. */
function OtherNpus({
  worker,
  npus,
  latest,
}: {
  worker: Worker;
  npus: Npu[];
  latest: ResourceState["latest"];
}) {
  return (
    <table className="fk-table fk-compact fk-npus" aria-label={`NPUs of ${worker.name}`}>
      <thead>
        <tr>
          <th>Container</th>
          <th>State</th>
          <th>Run · node</th>
          <th>CPU</th>
          <th>Memory</th>
          <th>Network in / out</th>
          <th>Pids</th>
        </tr>
      </thead>
      <tbody>
        {npus.map((npu) => {
          const sample = npu.run_id ? latest[npuKey(npu.run_id, npu.node_id, npu.attempt)] : undefined;
          return (
            <tr key={npu.container_id} data-npu={npu.container_id} data-kind={npu.kind ?? ""}>
              <td>
                <code>{npu.container_id.slice(0, 12)}</code>
              </td>
              <td>{npu.state}</td>
              <td>
                {npu.run_id ? (
                  <Link to={`/app/runs/${npu.run_id}`}>
                    {npu.run_id.slice(0, 8)} · {npu.node_id}
                    {npu.attempt && npu.attempt > 1 ? ` #${npu.attempt}` : ""}
                  </Link>
                ) : (
                  <span className="fk-muted">warm, idle</span>
                )}
              </td>
              <td data-testid="npu-cpu">
                {sample?.cpu_percent != null ? formatPercent(sample.cpu_percent) : "–"}
              </td>
              <td data-testid="npu-memory">
                {sample ? (
                  <MemoryText used={sample.memory_bytes} limit={sample.memory_limit_bytes} />
                ) : (
                  <MemoryText used={npu.memory_bytes} limit={null} />
                )}
              </td>
              <td>
                {sample?.net_rx_bytes != null ? formatBytes(sample.net_rx_bytes) : "–"} /{" "}
                {sample?.net_tx_bytes != null ? formatBytes(sample.net_tx_bytes) : "–"}
              </td>
              <td>{sample?.pids ?? "–"}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function Npus({ worker, latest }: { worker: Worker; latest: ResourceState["latest"] }) {
  const { dedicated, others } = npusByKind(worker);
  if (!worker.npus.length) {
    return (
      <>
        <h3>NPUs (0)</h3>
        <p className="fk-muted">No NPU right now.</p>
      </>
    );
  }
  return (
    <>
      {dedicated.length ? (
        <>
          <h3>Dedicated NPUs ({dedicated.length})</h3>
          <DedicatedNpus worker={worker} npus={dedicated} latest={latest} />
        </>
      ) : null}
      {others.length ? (
        <>
          <h3>
            {dedicated.length ? "Other NPUs" : "NPUs"} ({others.length})
          </h3>
          <OtherNpus worker={worker} npus={others} latest={latest} />
        </>
      ) : null}
    </>
  );
}

function WorkerCard({ worker, latest }: { worker: Worker; latest: ResourceState["latest"] }) {
  const me = useMe();
  const cpu = worker.cpu_percent;
  const memory =
    worker.memory_used_bytes !== null && worker.memory_total_bytes
      ? worker.memory_used_bytes / worker.memory_total_bytes
      : null;
  return (
    <article className="fk-worker" aria-label={`Worker ${worker.name}`} data-worker={worker.name}>
      <h2>
        {worker.name} <span className={`fk-state fk-worker-${worker.state}`}>{worker.state}</span>{" "}
        {me.role === "admin" && worker.state === "online" ? <DrainButton worker={worker} /> : null}
      </h2>
      <p className="fk-muted">
        {worker.host}, pid {worker.pid}, {worker.concurrency} slots, {worker.cpu_count ?? "?"} CPUs · last
        heartbeat {new Date(worker.last_seen).toLocaleTimeString()}
      </p>
      <p className="fk-muted" data-testid="capabilities">
        Capabilities:{" "}
        {worker.capabilities?.length ? worker.capabilities.join(", ") : "none (plain nodes only)"}
      </p>
      <Scaling worker={worker} />
      <Bar
        label="Host CPU"
        fraction={cpu === null ? null : cpu / 100}
        text={cpu === null ? "–" : formatPercent(cpu)}
      />
      <Bar
        label="Host memory"
        fraction={memory}
        text={
          worker.memory_used_bytes !== null && worker.memory_total_bytes
            ? `${formatBytes(worker.memory_used_bytes)} of ${formatBytes(worker.memory_total_bytes)}`
            : "–"
        }
      />
      <p className="fk-muted" data-testid="host-network">
        Host network:{" "}
        {worker.net_rx_bytes_per_s != null && worker.net_tx_bytes_per_s != null
          ? `${formatBytes(worker.net_rx_bytes_per_s)}/s in, ${formatBytes(worker.net_tx_bytes_per_s)}/s out`
          : "–"}
      </p>
      <Npus worker={worker} latest={latest} />
    </article>
  );
}

function useResources() {
  const [state, dispatch] = useReducer(resourceReducer, initialResourceState);
  const [status, setStatus] = useState<"connecting" | "live" | "reconnecting" | "refused">("connecting");
  useEffect(() => {
    let alive = true;
    let socket: WebSocket | null = null;
    let retries = 0;
    let timer = 0;
    function connect() {
      if (!alive) return;
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      const current = new WebSocket(`${scheme}://${window.location.host}/ws/monitor/`);
      socket = current;
      current.onopen = () => {
        retries = 0;
        setStatus("live");
      };
      current.onmessage = (message) => {
        try {
          dispatch(JSON.parse(String(message.data)) as MonitorFrame);
        } catch {
          // not a frame of ours: ignore
        }
      };
      current.onclose = (event) => {
        if (!alive || socket !== current) return;
        if (event.code >= 4400 && event.code < 4500) {
          setStatus("refused");
          return;
        }
        retries += 1;
        setStatus("reconnecting");
        timer = window.setTimeout(connect, retryDelayMs(retries));
      };
    }
    connect();
    return () => {
      alive = false;
      window.clearTimeout(timer);
      socket?.close();
    };
  }, []);
  return { state, status };
}

export function ResourcesPage() {
  const { state, status } = useResources();
  const workers = sortedWorkers(state);
  return (
    <section className="fk-page">
      <div className="fk-toolbar">
        <h1>Resources</h1>
        <span className={`fk-stream fk-stream-${status}`} data-testid="connection" role="status">
          {status === "live" ? "live" : status === "refused" ? "disconnected" : `${status}…`}
        </span>
        <span className="fk-muted">Workers report every {state.heartbeatS} s.</span>
      </div>
      {status === "refused" ? (
        <p className="fk-error" role="alert">
          The resource monitor refused this session. Log in again.
        </p>
      ) : null}
      {workers.length ? (
        workers.map((worker) => <WorkerCard key={worker.name} worker={worker} latest={state.latest} />)
      ) : (
        <p className="fk-empty">{status === "live" ? "No worker has reported yet." : "Connecting…"}</p>
      )}
    </section>
  );
}
