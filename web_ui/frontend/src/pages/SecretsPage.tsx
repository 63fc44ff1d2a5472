// The secret vault: names, descriptions and dates. Values are write-only: the API
// never returns one, and this page empties a value field as soon as it is sent.

import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { messageOf, traceApi, type SecretSummary } from "../api";
import { canEdit, useMe } from "../session";
import { AdminsOnly } from "./AdminsOnly";

function when(value: string | null): string {
  return value ? new Date(value).toLocaleString() : "never";
}

function ReplaceForm({ name, onDone }: { name: string; onDone: (message: string | null) => void }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    try {
      await traceApi.replaceSecret(name, value);
      setValue("");
      onDone(`The value of ${name} was replaced.`);
    } catch (exc) {
      setValue("");
      setError(messageOf(exc));
    } finally {
      setBusy(false);
    }
  }
  return (
    <form className="fk-inline" onSubmit={(event) => void submit(event)} aria-label={`Replace ${name}`}>
      <label className="fk-visually-hidden" htmlFor={`replace-${name}`}>
        New value of {name}
      </label>
      <textarea
        id={`replace-${name}`}
        rows={1}
        value={value}
        onChange={(event) => setValue(event.target.value)}
        autoComplete="off"
        spellCheck={false}
        required
        autoFocus
      />
      <button type="submit" disabled={busy}>
        Save value
      </button>
      <button type="button" className="fk-secondary" onClick={() => onDone(null)}>
        Cancel
      </button>
      {error ? (
        <span className="fk-error" role="alert">
          {error}
        </span>
      ) : null}
    </form>
  );
}

export function SecretsPage() {
  const me = useMe();
  const editable = canEdit(me.role);
  const [secrets, setSecrets] = useState<SecretSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [replacing, setReplacing] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);

  const load = useCallback(() => {
    traceApi.listSecrets().then(setSecrets, (exc) => setError(messageOf(exc)));
  }, []);
  useEffect(load, [load]);

  async function create(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      await traceApi.createSecret(name.trim(), value, description);
      setNotice(`Secret ${name.trim()} saved. Use it in node code as <<<secret::${name.trim()}>>>.`);
      setName("");
      setDescription("");
      load();
    } catch (exc) {
      setError(messageOf(exc));
    } finally {
      // Never keep a value in the page longer than the request that sends it.
      setValue("");
      setBusy(false);
    }
  }

  async function remove(secretName: string) {
    setError(null);
    try {
      await traceApi.deleteSecret(secretName);
      setNotice(`Secret ${secretName} deleted.`);
      setDeleting(null);
      load();
    } catch (exc) {
      setError(messageOf(exc));
    }
  }

  return (
    <section className="fk-page">
      <h1>Secrets</h1>
      <p className="fk-muted">
        Reference a secret in node code as <code>{"<<<secret::NAME>>>"}</code>. Values are write-only: no page
        or API call shows them again, and they are masked as <code>***</code> in logs and outputs.
        {me.role === "admin" ? (
          <>
            {" "}
            <Link to="/app/secrets/audit">Audit log</Link>
          </>
        ) : null}
      </p>
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {notice ? (
        <p className="fk-notice" role="status">
          {notice}
        </p>
      ) : null}
      {secrets === null ? (
        <p className="fk-muted">Loading…</p>
      ) : secrets.length === 0 ? (
        <p className="fk-empty">No secrets yet.{editable ? " Add the first one below." : ""}</p>
      ) : (
        <table className="fk-table" aria-label="Secrets">
          <thead>
            <tr>
              <th>Name</th>
              <th>Description</th>
              <th>Created</th>
              <th>Updated</th>
              <th>Last used</th>
              {editable ? <th>Actions</th> : null}
            </tr>
          </thead>
          <tbody>
            {secrets.map((secret) => (
              <tr key={secret.name} data-secret={secret.name}>
                <td>
                  <code>{secret.name}</code>
                </td>
                <td>{secret.description}</td>
                <td>{when(secret.created_at)}</td>
                <td>{when(secret.updated_at)}</td>
                <td>{when(secret.last_used_at)}</td>
                {editable ? (
                  <td>
                    {replacing === secret.name ? (
                      <ReplaceForm
                        name={secret.name}
                        onDone={(message) => {
                          setReplacing(null);
                          if (message) {
                            setNotice(message);
                            load();
                          }
                        }}
                      />
                    ) : deleting === secret.name ? (
                      <span className="fk-inline">
                        Delete {secret.name}? Nodes that use it will fail.
                        <button type="button" className="fk-danger" onClick={() => void remove(secret.name)}>
                          Delete {secret.name}
                        </button>
                        <button type="button" className="fk-secondary" onClick={() => setDeleting(null)}>
                          Keep
                        </button>
                      </span>
                    ) : (
                      <span className="fk-inline">
                        <button type="button" onClick={() => setReplacing(secret.name)}>
                          Replace value
                        </button>
                        <button type="button" className="fk-danger" onClick={() => setDeleting(secret.name)}>
                          Delete
                        </button>
                      </span>
                    )}
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {editable ? (
        <form className="fk-secret-form" onSubmit={(event) => void create(event)} aria-label="Add a secret">
          <h2>Add a secret</h2>
          <label className="fk-field">
            <span>Name</span>
            <input
              value={name}
              onChange={(event) => setName(event.target.value)}
              pattern="[A-Za-z_][A-Za-z0-9_]*"
              title="Letters, digits and _, not starting with a digit"
              maxLength={128}
              required
            />
          </label>
          <label className="fk-field">
            <span>Description</span>
            <input
              value={description}
              onChange={(event) => setDescription(event.target.value)}
              maxLength={500}
            />
          </label>
          <label className="fk-field">
            <span>Value</span>
            <textarea
              rows={3}
              value={value}
              onChange={(event) => setValue(event.target.value)}
              autoComplete="off"
              spellCheck={false}
              required
            />
          </label>
          <button type="submit" disabled={busy}>
            Add secret
          </button>
        </form>
      ) : (
        <p className="fk-muted">Your role ({me.role}) can see secret names only.</p>
      )}
    </section>
  );
}

export function SecretAuditPage() {
  return (
    <AdminsOnly title="Secret audit log" back={{ to: "/app/secrets", label: "Back to the secrets" }}>
      <SecretAuditLog />
    </AdminsOnly>
  );
}

function SecretAuditLog() {
  const [events, setEvents] = useState<Awaited<ReturnType<typeof traceApi.secretAudit>> | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    traceApi.secretAudit().then(setEvents, (exc) => setError(messageOf(exc)));
  }, []);
  return (
    <section className="fk-page">
      <h1>Secret audit log</h1>
      <p className="fk-muted">
        Every creation, replacement, deletion and use of a secret, and every refused attempt; newest first.{" "}
        <Link to="/app/secrets">Back to the secrets</Link>
      </p>
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {events === null ? (
        <p className="fk-muted">Loading…</p>
      ) : events.length === 0 ? (
        <p className="fk-empty">Nothing happened to a secret yet.</p>
      ) : (
        <table className="fk-table" aria-label="Audit log">
          <thead>
            <tr>
              <th>When</th>
              <th>Action</th>
              <th>Who</th>
              <th>Secrets</th>
              <th>Run, node</th>
              <th>Detail</th>
            </tr>
          </thead>
          <tbody>
            {events.map((event, index) => (
              <tr key={`${event.at}-${index}`}>
                <td>{new Date(event.at).toLocaleString()}</td>
                <td>{event.action}</td>
                <td>{event.actor_name || "–"}</td>
                <td>{event.names.join(", ")}</td>
                <td>
                  {event.run_id ? (
                    <Link to={`/app/runs/${event.run_id}`}>
                      {event.run_id.slice(0, 8)}
                      {event.node_id ? ` · ${event.node_id}` : ""}
                    </Link>
                  ) : (
                    "–"
                  )}
                </td>
                <td>{event.detail}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
