// The side panel of the selected node: label, code, ports, limits, and a test run
// of this node alone with given JSON inputs.

import type { Connection, Edge } from "@xyflow/react";
import { useEffect, useRef, useState } from "react";
import { api, messageOf, type NodeTest } from "../api";
import { formatPorts, parsePorts, type FlowNode, type FlowNodeData, type Limits } from "../document";
import { CodeEditor } from "./CodeEditor";

interface Props {
  node: FlowNode;
  readOnly: boolean;
  problems: string[] | undefined;
  onChange: (id: string, patch: Partial<FlowNodeData>, coalesceKey: string) => void;
  // What feeds this node's inputs, and the outputs that could: the keyboard's way
  // to connect ports (the canvas needs a pointer).
  incoming: readonly Edge[];
  candidates: readonly { node: string; label: string; port: string }[];
  onConnect: (connection: Connection) => void;
  onDisconnect: (edgeId: string) => void;
}

// Only these limits apply to a single test run; retries and backoff belong to runs.
const RUNTIME_LIMITS = ["timeout_s", "memory_mb", "cpus", "pids", "network"] as const;

function runtimeLimits(limits: Limits): Record<string, unknown> {
  return Object.fromEntries(
    RUNTIME_LIMITS.filter((name) => limits[name] !== undefined).map((name) => [name, limits[name]]),
  );
}

/** A text field that commits on blur or Enter, so a half-typed value never reformats under the cursor. */
// A node's "requires" (node_runner.routing) is kept among the document's other fields.
function requiresOf(data: FlowNodeData): string[] {
  const value = data.extra.requires;
  return Array.isArray(value) ? value.map(String) : [];
}

function withRequires(extra: Record<string, unknown>, text: string): Record<string, unknown> {
  const { requires: _old, ...rest } = extra;
  const wanted = text
    .split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  return wanted.length ? { ...rest, requires: wanted } : rest;
}

function CommitField(props: {
  label: string;
  value: string;
  readOnly: boolean;
  onCommit: (text: string) => void;
  hint?: string;
  inputMode?: "decimal" | "text";
}) {
  const [text, setText] = useState(props.value);
  useEffect(() => setText(props.value), [props.value]);
  return (
    <label className="fk-field">
      <span>{props.label}</span>
      <input
        value={text}
        readOnly={props.readOnly}
        inputMode={props.inputMode}
        onChange={(event) => setText(event.target.value)}
        onBlur={() => text !== props.value && props.onCommit(text)}
        onKeyDown={(event) => {
          if (event.key === "Enter") props.onCommit(text);
        }}
      />
      {props.hint ? <small>{props.hint}</small> : null}
    </label>
  );
}

function LimitField(props: {
  name: keyof Limits;
  label: string;
  node: FlowNode;
  readOnly: boolean;
  onChange: Props["onChange"];
}) {
  const value = props.node.data.limits[props.name];
  return (
    <CommitField
      label={props.label}
      value={value === undefined ? "" : String(value)}
      readOnly={props.readOnly}
      inputMode="decimal"
      hint="empty: the default"
      onCommit={(text) => {
        const trimmed = text.trim();
        // A non-number is sent as typed: the server's validation names the problem.
        const parsed: unknown =
          trimmed === "" ? undefined : Number.isNaN(Number(trimmed)) ? trimmed : Number(trimmed);
        props.onChange(
          props.node.id,
          { limits: { ...props.node.data.limits, [props.name]: parsed } },
          `limit-${props.name}`,
        );
      }}
    />
  );
}

const FINISHED_TEST_STATES = new Set(["succeeded", "failed", "cancelled"]);

function NodeTestSection({ node }: { node: FlowNode }) {
  const [inputs, setInputs] = useState(() =>
    JSON.stringify(Object.fromEntries(node.data.inputs.map((port) => [port.name, null])), null, 2),
  );
  const [result, setResult] = useState<NodeTest | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [testId, setTestId] = useState<string | null>(null);
  const alive = useRef(true);
  useEffect(() => {
    alive.current = true;
    return () => {
      alive.current = false;
    };
  }, []);

  async function run() {
    setError(null);
    setResult(null);
    let parsed: unknown;
    try {
      parsed = JSON.parse(inputs);
    } catch (exc) {
      setError(`Inputs are not valid JSON: ${messageOf(exc)}`);
      return;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      setError('Inputs must be a JSON object: {"port": value}');
      return;
    }
    setBusy(true);
    try {
      const started = await api.startNodeTest({
        code: node.data.code,
        inputs: parsed as Record<string, unknown>,
        limits: runtimeLimits(node.data.limits),
        label: node.id,
      });
      setTestId(started.id);
      // Poll: a test run is short, and this keeps the endpoint a plain GET.
      for (;;) {
        const current = await api.getNodeTest(started.id);
        if (!alive.current) return;
        setResult(current);
        if (FINISHED_TEST_STATES.has(current.state)) break;
        await new Promise((resolve) => window.setTimeout(resolve, 500));
      }
    } catch (exc) {
      if (alive.current) setError(messageOf(exc));
    } finally {
      if (alive.current) {
        setBusy(false);
        setTestId(null);
      }
    }
  }

  async function cancel() {
    if (!testId) return;
    try {
      // The poll above sees the test end, cancelled (or finished meanwhile: 409).
      await api.cancelNodeTest(testId);
    } catch (exc) {
      if (alive.current) setError(messageOf(exc));
    }
  }

  return (
    <section className="fk-test" aria-label="Test node">
      <h3>Test this node</h3>
      <label className="fk-field">
        <span>Inputs (JSON)</span>
        <textarea
          rows={3}
          value={inputs}
          onChange={(event) => setInputs(event.target.value)}
          spellCheck={false}
        />
      </label>
      <button type="button" onClick={run} disabled={busy}>
        {busy ? "Testing…" : "Test node"}
      </button>
      {busy && testId ? (
        <button type="button" onClick={cancel}>
          Cancel test
        </button>
      ) : null}
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {result ? (
        <div className="fk-test-result" data-state={result.state} aria-live="polite">
          <p>
            State: <strong className={`fk-state fk-state-${result.state}`}>{result.state}</strong>
            {result.status_message ? ` — ${result.status_message}` : ""}
          </p>
          {result.state === "succeeded" ? (
            <>
              <h4>Outputs</h4>
              <pre className="fk-outputs">{JSON.stringify(result.outputs, null, 2)}</pre>
            </>
          ) : null}
          {result.error ? (
            <>
              <h4>Error</h4>
              <pre className="fk-error">
                {[result.error.error_type, result.error.message].filter(Boolean).join(": ")}
                {result.error.traceback ? `\n\n${result.error.traceback}` : ""}
              </pre>
            </>
          ) : null}
          {result.logs.length ? (
            <>
              <h4>Logs</h4>
              <pre className="fk-logs">
                {result.logs
                  .map((line) => `${line.level ?? ""} ${line.message ?? JSON.stringify(line)}`)
                  .join("\n")}
              </pre>
            </>
          ) : null}
        </div>
      ) : null}
    </section>
  );
}

function Connections({ node, readOnly, incoming, candidates, onConnect, onDisconnect }: Props) {
  if (!node.data.inputs.length) return null;
  return (
    <fieldset className="fk-connections">
      <legend>Inputs connected from</legend>
      {node.data.inputs.map((port) => {
        const edges = incoming.filter((edge) => edge.targetHandle === port.name);
        return (
          <div key={port.name} className="fk-connection">
            <code>{port.name}</code>
            <ul>
              {edges.map((edge) => (
                <li key={edge.id}>
                  {edge.source}.{edge.sourceHandle}
                  {readOnly ? null : (
                    <button
                      type="button"
                      className="fk-link-button"
                      aria-label={`Disconnect ${edge.source}.${edge.sourceHandle} from ${port.name}`}
                      onClick={() => onDisconnect(edge.id)}
                    >
                      ×
                    </button>
                  )}
                </li>
              ))}
              {edges.length ? null : <li className="fk-muted">nothing</li>}
            </ul>
            {readOnly || (edges.length && !port.list) ? null : (
              <select
                aria-label={`Connect an output to ${port.name}`}
                value=""
                onChange={(event) => {
                  const [source, sourceHandle] = JSON.parse(event.target.value) as [string, string];
                  onConnect({ source, sourceHandle, target: node.id, targetHandle: port.name });
                }}
              >
                <option value="">Connect from…</option>
                {candidates.map((candidate) => (
                  <option
                    key={`${candidate.node}.${candidate.port}`}
                    value={JSON.stringify([candidate.node, candidate.port])}
                  >
                    {candidate.label} ({candidate.node}.{candidate.port})
                  </option>
                ))}
              </select>
            )}
          </div>
        );
      })}
    </fieldset>
  );
}

export function NodePanel(props: Props) {
  const { node, readOnly, problems, onChange } = props;
  const { data } = node;
  return (
    <aside className="fk-panel" aria-label="Selected node">
      <h2>
        Node <code>{node.id}</code>
      </h2>
      {problems ? (
        <ul className="fk-error" role="alert">
          {problems.map((message) => (
            <li key={message}>{message}</li>
          ))}
        </ul>
      ) : null}
      <label className="fk-field">
        <span>Label</span>
        <input
          value={data.label}
          readOnly={readOnly}
          onChange={(event) => onChange(node.id, { label: event.target.value }, "label")}
        />
      </label>
      <div className="fk-field">
        <span id="fk-code-label">Code</span>
        <CodeEditor
          key={node.id}
          label="Node code"
          value={data.code}
          readOnly={readOnly}
          onChange={(code) => onChange(node.id, { code }, "code")}
        />
      </div>
      <CommitField
        label="Input ports"
        value={formatPorts(data.inputs)}
        readOnly={readOnly}
        hint="comma-separated; name[] accepts several edges"
        onCommit={(text) => onChange(node.id, { inputs: parsePorts(text) }, "inputs")}
      />
      <CommitField
        label="Output ports"
        value={data.outputs.join(", ")}
        readOnly={readOnly}
        hint="comma-separated"
        onCommit={(text) =>
          onChange(node.id, { outputs: parsePorts(text).map((port) => port.name) }, "outputs")
        }
      />
      <Connections {...props} />
      <fieldset className="fk-limits">
        <legend>Limits</legend>
        <LimitField
          name="timeout_s"
          label="Timeout (s)"
          node={node}
          readOnly={readOnly}
          onChange={onChange}
        />
        <LimitField name="retries" label="Retries" node={node} readOnly={readOnly} onChange={onChange} />
        <LimitField
          name="memory_mb"
          label="Memory (MB)"
          node={node}
          readOnly={readOnly}
          onChange={onChange}
        />
        <LimitField name="cpus" label="CPUs" node={node} readOnly={readOnly} onChange={onChange} />
        <label className="fk-check">
          <input
            type="checkbox"
            checked={Boolean(data.limits.network)}
            disabled={readOnly}
            onChange={(event) =>
              onChange(
                node.id,
                { limits: { ...data.limits, network: event.target.checked || undefined } },
                "network",
              )
            }
          />
          Network access
        </label>
      </fieldset>
      <CommitField
        label="Worker capabilities"
        value={requiresOf(data).join(", ")}
        readOnly={readOnly}
        hint="comma-separated, e.g. gpu: the node runs only on a worker that declares them all"
        onCommit={(text) => onChange(node.id, { extra: withRequires(data.extra, text) }, "requires")}
      />
      {readOnly ? null : <NodeTestSection key={node.id} node={node} />}
    </aside>
  );
}
