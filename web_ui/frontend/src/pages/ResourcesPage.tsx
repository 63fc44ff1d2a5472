// The resource monitor: every worker with its host's CPU, memory and network, and the
// NPUs it drives with their CPU, memory, network and pids, live from /ws/monitor/. A dropped
// connection is retried with backoff; each connection starts with a fresh snapshot.
// Each worker shows what it offers (capabilities), its pool and the queue depth it
// sees, the autoscaler's recent decisions, and, for admins, a Drain button.

import { useEffect, useReducer, useState } from "react";
import { Link } from "react-router-dom";
import { api, messageOf } from "../api";
import { formatBytes, formatPercent } from "../monitor/LineChart";
import { retryDelayMs } from "../monitor/useRunStream";
import {
  initialResourceState,
  npuKey,
  poolText,
  recentScaling,
  resourceReducer,
  scalingLine,
  sortedWorkers,
  type MonitorFrame,
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
      <h3>NPUs ({worker.npus.length})</h3>
      {worker.npus.length ? (
        <table className="fk-table fk-compact" aria-label={`NPUs of ${worker.name}`}>
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
            {worker.npus.map((npu) => {
              const sample = npu.run_id ? latest[npuKey(npu.run_id, npu.node_id, npu.attempt)] : undefined;
              return (
                <tr key={npu.container_id} data-npu={npu.container_id}>
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
                  <td>{sample?.cpu_percent != null ? formatPercent(sample.cpu_percent) : "–"}</td>
                  <td>
                    {sample ? formatBytes(sample.memory_bytes) : "–"}
                    {sample?.memory_limit_bytes ? ` of ${formatBytes(sample.memory_limit_bytes)}` : ""}
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
      ) : (
        <p className="fk-muted">No NPU right now.</p>
      )}
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
