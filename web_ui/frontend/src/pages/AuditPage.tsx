// The audit log, for admins: sign-ins, pipeline edits, run controls, node tests, secret
// operations, drains and API tokens, newest first (GET /api/audit). Filters live in the
// URL (?action=&actor=&since=), as on the runs history, so a view can be shared.

import { useEffect, useState } from "react";
import { Link } from "react-router-dom";
import { messageOf, traceApi, type AuditEvent } from "../api";
import { useUrlFilters } from "../urlFilters";
import { AdminsOnly } from "./AdminsOnly";
import { dayStart } from "./RunsPage";

const LIMIT = 500;
const FILTERS = ["action", "actor", "since"] as const;
// Action prefixes, as the API filters them ("run." gives every run control).
const KINDS: [string, string][] = [
  ["auth.", "sign-ins"],
  ["pipeline.", "pipelines"],
  ["run.", "run controls"],
  ["node_test.", "node tests"],
  ["secret.", "secrets"],
  ["worker.", "workers"],
  ["token.", "API tokens"],
];

/** Where an audited target can be opened, by the kind of its action. */
function targetLink(event: AuditEvent): string | null {
  if (event.action.startsWith("run.")) return `/app/runs/${event.target}`;
  if (event.action.startsWith("pipeline.") && event.action !== "pipeline.delete")
    return `/app/pipelines/${event.target}`;
  return null;
}

function detailText(detail: Record<string, unknown>): string {
  return Object.entries(detail)
    .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(", ");
}

export function AuditPage() {
  return (
    <AdminsOnly title="Audit log" back={{ to: "/app/", label: "Back to the pipelines" }}>
      <AuditLog />
    </AdminsOnly>
  );
}

function AuditLog() {
  const { values, form, apply, filtered } = useUrlFilters(FILTERS);
  const { action, actor, since } = values;
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let alive = true;
    setEvents(null);
    traceApi
      .audit({
        action: action || undefined,
        actor: actor || undefined,
        since: since ? dayStart(since) : undefined,
        limit: LIMIT,
      })
      .then(
        (answer) => {
          if (!alive) return;
          setEvents(answer);
          setError(null);
        },
        (exc) => alive && setError(messageOf(exc)),
      );
    return () => {
      alive = false;
    };
  }, [action, actor, since]);

  return (
    <section className="fk-page">
      <h1>Audit log</h1>
      <p className="fk-muted">
        Who did what, newest first; the log is append-only. What happened to each secret, with the runs that
        used it, is in the <Link to="/app/secrets/audit">secret audit log</Link>.
      </p>
      <form ref={form} className="fk-toolbar" onSubmit={apply} aria-label="Filter the audit log">
        <label className="fk-inline">
          Kind
          <select
            name="action"
            defaultValue={action}
            onChange={(event) => event.currentTarget.form?.requestSubmit()}
          >
            <option value="">all</option>
            {KINDS.map(([prefix, label]) => (
              <option key={prefix} value={prefix}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <label className="fk-inline">
          Who
          <input name="actor" defaultValue={actor} placeholder="user name" />
        </label>
        <label className="fk-inline">
          From
          <input
            type="date"
            name="since"
            defaultValue={since}
            onChange={(event) => event.currentTarget.form?.requestSubmit()}
          />
        </label>
        <button type="submit">Filter</button>
        {filtered ? <Link to="/app/audit">Clear filters</Link> : null}
      </form>
      {error ? (
        <p className="fk-error" role="alert">
          {error}
        </p>
      ) : null}
      {events === null ? (
        <p className="fk-muted">Loading…</p>
      ) : events.length === 0 ? (
        <p className="fk-empty">Nothing in the audit log matches these filters.</p>
      ) : (
        <>
          <table className="fk-table" aria-label="Audit events">
            <thead>
              <tr>
                <th>When</th>
                <th>Who</th>
                <th>Action</th>
                <th>Target</th>
                <th>Detail</th>
                <th>From</th>
              </tr>
            </thead>
            <tbody>
              {events.map((event) => {
                const link = targetLink(event);
                return (
                  <tr key={event.id} data-action={event.action}>
                    <td>{new Date(event.at).toLocaleString()}</td>
                    <td>{event.actor || "system"}</td>
                    <td>{event.action}</td>
                    <td>{link ? <Link to={link}>{event.target}</Link> : event.target || "–"}</td>
                    <td>{detailText(event.detail) || "–"}</td>
                    <td>
                      {event.via || "–"}
                      {event.ip ? ` · ${event.ip}` : ""}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {events.length === LIMIT ? (
            <p className="fk-muted">
              The newest {LIMIT} events are shown; narrow the filters to see older ones.
            </p>
          ) : null}
        </>
      )}
    </section>
  );
}
