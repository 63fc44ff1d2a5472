// The pipelines list: search, create, rename, duplicate, delete, import and export.

import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";
import { api, messageOf, type PipelineSummary } from "../api";
import { SCHEMA_VERSION, type PipelineDocument } from "../document";
import { TEMPLATES } from "../editor/templates";
import { canEdit, useMe } from "../session";

// The server refuses an empty graph, so a new pipeline starts with one blank node.
function starterDocument(): PipelineDocument {
  const blank = TEMPLATES[0];
  return {
    schema_version: SCHEMA_VERSION,
    nodes: [
      {
        id: "start",
        label: "Start",
        code: blank.code,
        inputs: [],
        outputs: blank.outputs,
        position: { x: 0, y: 0 },
      },
    ],
    edges: [],
  };
}

function downloadJson(data: unknown, filename: string) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = filename;
  anchor.click();
  URL.revokeObjectURL(url);
}

function fileNameFor(name: string): string {
  return `${name.replace(/[^A-Za-z0-9_-]+/g, "_").slice(0, 80) || "pipeline"}.flowkit.json`;
}

function PipelineRow({
  pipeline,
  editable,
  onChanged,
  onError,
}: {
  pipeline: PipelineSummary;
  editable: boolean;
  onChanged: (message: string) => void;
  onError: (message: string) => void;
}) {
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(pipeline.name);

  async function act(action: () => Promise<unknown>, done: string) {
    try {
      await action();
      onChanged(done);
    } catch (exc) {
      onError(messageOf(exc));
    }
  }

  return (
    <tr data-pipeline={pipeline.name}>
      <td>
        {renaming ? (
          <form
            onSubmit={(event) => {
              event.preventDefault();
              setRenaming(false);
              void act(() => api.renamePipeline(pipeline.id, name.trim()), `Renamed to “${name.trim()}”.`);
            }}
          >
            <input
              aria-label="New name"
              value={name}
              autoFocus
              onChange={(event) => setName(event.target.value)}
            />
            <button type="submit" disabled={!name.trim()}>
              Save name
            </button>
            <button type="button" onClick={() => setRenaming(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <Link to={`/app/pipelines/${pipeline.id}`}>{pipeline.name}</Link>
        )}
      </td>
      <td>{pipeline.latest_version ?? "—"}</td>
      <td>{new Date(pipeline.updated_at).toLocaleString()}</td>
      <td className="fk-actions">
        <button
          type="button"
          onClick={() =>
            void api.exportPipeline(pipeline.id).then(
              (data) => downloadJson(data, fileNameFor(pipeline.name)),
              (exc) => onError(messageOf(exc)),
            )
          }
        >
          Export
        </button>
        {editable ? (
          <>
            <button type="button" onClick={() => setRenaming(true)}>
              Rename
            </button>
            <button
              type="button"
              onClick={() =>
                void act(
                  () => api.duplicatePipeline(pipeline.id, `${pipeline.name} (copy)`),
                  `Duplicated “${pipeline.name}”.`,
                )
              }
            >
              Duplicate
            </button>
            <button
              type="button"
              className="fk-danger"
              onClick={() => {
                if (window.confirm(`Delete the pipeline “${pipeline.name}” and all its versions and runs?`)) {
                  void act(() => api.deletePipeline(pipeline.id), `Deleted “${pipeline.name}”.`);
                }
              }}
            >
              Delete
            </button>
          </>
        ) : null}
      </td>
    </tr>
  );
}

export function PipelinesPage() {
  const me = useMe();
  const editable = canEdit(me.role);
  const navigate = useNavigate();
  const [search, setSearch] = useState("");
  const [pipelines, setPipelines] = useState<PipelineSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [newName, setNewName] = useState("");
  const fileInput = useRef<HTMLInputElement>(null);

  const load = useCallback(async (term: string) => {
    try {
      setPipelines(await api.listPipelines(term));
    } catch (exc) {
      setError(messageOf(exc));
    }
  }, []);

  useEffect(() => {
    // Wait for a pause in typing before asking the server.
    const timer = window.setTimeout(() => void load(search.trim()), 200);
    return () => window.clearTimeout(timer);
  }, [search, load]);

  function changed(message: string) {
    setError(null);
    setNotice(message);
    void load(search.trim());
  }

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(null);
    try {
      const created = await api.createPipeline(newName.trim(), starterDocument());
      navigate(`/app/pipelines/${created.id}`);
    } catch (exc) {
      setError(messageOf(exc));
    }
  }

  async function importFile(file: File) {
    setError(null);
    let data: unknown;
    try {
      data = JSON.parse(await file.text());
    } catch (exc) {
      setError(`${file.name} is not JSON: ${messageOf(exc)}`);
      return;
    }
    try {
      const created = await api.importPipeline(data);
      changed(`Imported “${created.name}”.`);
    } catch (exc) {
      setError(`${file.name} was not imported: ${messageOf(exc)}`);
    }
  }

  return (
    <section className="fk-page">
      <h1>Pipelines</h1>
      <div className="fk-toolbar">
        <input
          type="search"
          placeholder="Search by name"
          aria-label="Search pipelines"
          value={search}
          onChange={(event) => setSearch(event.target.value)}
        />
        {editable ? (
          <>
            <form className="fk-inline" onSubmit={create}>
              <input
                aria-label="New pipeline name"
                placeholder="New pipeline name"
                value={newName}
                maxLength={200}
                onChange={(event) => setNewName(event.target.value)}
              />
              <button type="submit" disabled={!newName.trim()}>
                Create pipeline
              </button>
            </form>
            <button type="button" onClick={() => fileInput.current?.click()}>
              Import JSON…
            </button>
            <input
              ref={fileInput}
              type="file"
              accept="application/json,.json"
              aria-label="Import a pipeline file"
              hidden
              onChange={(event) => {
                const file = event.target.files?.[0];
                event.target.value = "";
                if (file) void importFile(file);
              }}
            />
          </>
        ) : (
          <span className="fk-muted">You can view pipelines; editing needs the editor role.</span>
        )}
      </div>
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
      {pipelines === null ? (
        <p className="fk-muted">Loading…</p>
      ) : pipelines.length === 0 ? (
        <p className="fk-empty">
          {search.trim()
            ? `No pipeline matches “${search.trim()}”.`
            : editable
              ? "No pipelines yet. Name one above and create it, or import a JSON file."
              : "No pipelines yet."}
        </p>
      ) : (
        <table className="fk-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Version</th>
              <th>Updated</th>
              <th>
                <span className="fk-visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {pipelines.map((pipeline) => (
              <PipelineRow
                key={pipeline.id}
                pipeline={pipeline}
                editable={editable}
                onChanged={changed}
                onError={setError}
              />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
