// The graph editor of one pipeline. All of the page's state lives in EditorStore
// (editor/store.ts); this file wires it to the canvas, the palette and the panel.

import { Background, Controls, MiniMap, ReactFlow, ReactFlowProvider, type Edge } from "@xyflow/react";
import { useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import { Link, useBlocker, useNavigate, useParams } from "react-router-dom";
import { api, messageOf, type PipelineDetail } from "../api";
import { NODE_TYPES } from "../editor/FlowkitNode";
import { NodePanel } from "../editor/NodePanel";
import { Palette, TEMPLATE_MIME } from "../editor/Palette";
import { ProblemsContext } from "../editor/problems";
import { useEditorStore, type EditorStore } from "../editor/store";
import { templateByKey } from "../editor/templates";
import { canEdit, useMe } from "../session";

export function EditorPage() {
  const { pipelineId = "" } = useParams();
  const [pipeline, setPipeline] = useState<PipelineDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setPipeline(null);
    api.getPipeline(pipelineId).then(setPipeline, (exc) => setError(messageOf(exc)));
  }, [pipelineId]);
  if (error) {
    return (
      <p className="fk-error" role="alert">
        {error} <Link to="/app/">Back to the pipelines</Link>
      </p>
    );
  }
  if (!pipeline) return <p className="fk-muted">Loading…</p>;
  return (
    <ReactFlowProvider>
      <Editor key={pipeline.id} pipeline={pipeline} />
    </ReactFlowProvider>
  );
}

function useUnsavedChangesWarning(store: EditorStore) {
  useEffect(() => {
    if (!store.dirty) return;
    const warn = (event: BeforeUnloadEvent) => {
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [store.dirty]);
  // Read through a ref: Run saves and then navigates before the next render.
  const blocker = useBlocker(() => store.isDirty());
  useEffect(() => {
    if (blocker.state !== "blocked") return;
    if (window.confirm("This pipeline has unsaved changes. Leave without saving?")) blocker.proceed();
    else blocker.reset();
  }, [blocker]);
}

function isTyping(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

/** True when the user has selected text on the page: Ctrl+C then copies that text. */
function hasTextSelection(): boolean {
  return Boolean(window.getSelection()?.toString());
}

function useShortcuts(store: EditorStore, editable: boolean) {
  // One listener for the page's life; it reads the latest store through a ref.
  const latest = useRef(store);
  latest.current = store;
  useEffect(() => {
    function onKey(event: KeyboardEvent) {
      const store = latest.current;
      const mod = event.ctrlKey || event.metaKey;
      const key = event.key.toLowerCase();
      if (mod && key === "s") {
        event.preventDefault();
        if (editable) void store.save();
        return;
      }
      if (!editable || isTyping(event.target)) return;
      if (mod && key === "z" && !event.shiftKey) store.undo();
      else if (mod && ((key === "z" && event.shiftKey) || key === "y")) store.redo();
      else if (mod && key === "c") {
        if (hasTextSelection() || !store.copy()) return;
      } else if (mod && key === "v") {
        if (!store.paste()) return;
      } else if (!mod && (event.key === "Delete" || event.key === "Backspace")) store.deleteSelected();
      else return;
      event.preventDefault();
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [editable]);
}

function Editor({ pipeline }: { pipeline: PipelineDetail }) {
  const me = useMe();
  const editable = canEdit(me.role);
  const navigate = useNavigate();
  const store = useEditorStore(pipeline);
  const [runInput, setRunInput] = useState("{}");
  useUnsavedChangesWarning(store);
  useShortcuts(store, editable);

  const edges = useMemo<Edge[]>(
    () =>
      store.graph.edges.map((edge) => {
        const messages = store.problems.edges.get(edge.id);
        return messages ? { ...edge, className: "has-problem", label: messages.join("; ") } : edge;
      }),
    [store.graph.edges, store.problems],
  );
  const selected = store.graph.nodes.filter((node) => node.selected);
  const focus = selected.length === 1 ? selected[0] : null;
  const incoming = useMemo(
    () => (focus ? store.graph.edges.filter((edge) => edge.target === focus.id) : []),
    [focus, store.graph.edges],
  );
  const candidates = useMemo(
    () =>
      focus
        ? store.graph.nodes
            .filter((node) => node.id !== focus.id)
            .flatMap((node) =>
              node.data.outputs.map((port) => ({ node: node.id, label: node.data.label, port })),
            )
        : [],
    [focus, store.graph.nodes],
  );

  function onDrop(event: DragEvent) {
    event.preventDefault();
    const template = templateByKey(event.dataTransfer.getData(TEMPLATE_MIME));
    if (template)
      store.addNode(template, store.flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
  }

  async function run() {
    let input: unknown;
    try {
      input = runInput.trim() ? JSON.parse(runInput) : null;
    } catch (exc) {
      store.setNotice({ kind: "error", text: `Run input is not valid JSON: ${messageOf(exc)}` });
      return;
    }
    const runId = await store.run(input);
    if (runId) navigate(`/app/runs/${runId}`);
  }

  return (
    <div className="fk-editor">
      <div className="fk-toolbar fk-editor-toolbar" role="toolbar" aria-label="Editor">
        <Link to="/app/">Pipelines</Link>
        <h1>{pipeline.name}</h1>
        <span className="fk-muted" data-testid="version">
          {store.version ? `v${store.version}` : "not saved"}
          {store.dirty ? " · unsaved changes" : ""}
        </span>
        {editable ? (
          <>
            <button type="button" onClick={() => void store.save()} disabled={store.busy} title="Ctrl+S">
              Save
            </button>
            <label className="fk-inline">
              <span>Run input</span>
              <input
                className="fk-run-input"
                value={runInput}
                onChange={(event) => setRunInput(event.target.value)}
                spellCheck={false}
              />
            </label>
            <button type="button" onClick={() => void run()} disabled={store.busy}>
              Run
            </button>
            <button type="button" onClick={store.undo} disabled={!store.canUndo} title="Ctrl+Z">
              Undo
            </button>
            <button type="button" onClick={store.redo} disabled={!store.canRedo} title="Ctrl+Shift+Z">
              Redo
            </button>
            <button type="button" onClick={store.autoLayout}>
              Auto layout
            </button>
          </>
        ) : (
          <span className="fk-muted">Read only: editing needs the editor role.</span>
        )}
        <button type="button" onClick={() => void store.flow.fitView({ padding: 0.2 })}>
          Zoom to fit
        </button>
      </div>
      {store.notice ? (
        <div
          className={store.notice.kind === "error" ? "fk-error" : "fk-notice"}
          role={store.notice.kind === "error" ? "alert" : "status"}
        >
          {store.notice.text}
          {store.problems.general.length ? (
            <ul>
              {store.problems.general.map((message) => (
                <li key={message}>{message}</li>
              ))}
            </ul>
          ) : null}
        </div>
      ) : null}
      <div className="fk-editor-body">
        {editable ? <Palette onAdd={store.addNodeAtCentre} /> : null}
        <div
          className="fk-canvas"
          onDrop={onDrop}
          onDragOver={(event) => {
            event.preventDefault();
            event.dataTransfer.dropEffect = "copy";
          }}
        >
          <ProblemsContext.Provider value={store.problems}>
            <ReactFlow
              nodes={store.graph.nodes}
              edges={edges}
              nodeTypes={NODE_TYPES}
              onNodesChange={store.onNodesChange}
              onEdgesChange={store.onEdgesChange}
              onConnect={store.onConnect}
              onNodeDragStart={store.onNodeDragStart}
              nodesDraggable={editable}
              nodesConnectable={editable}
              deleteKeyCode={null}
              fitView
              fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
              onlyRenderVisibleElements
              minZoom={0.05}
            >
              <Background />
              <Controls showInteractive={false} />
              <MiniMap pannable zoomable ariaLabel="Minimap" />
            </ReactFlow>
          </ProblemsContext.Provider>
        </div>
        {focus ? (
          <NodePanel
            node={focus}
            readOnly={!editable}
            problems={store.problems.nodes.get(focus.id)}
            onChange={store.updateNode}
            incoming={incoming}
            candidates={candidates}
            onConnect={store.onConnect}
            onDisconnect={store.disconnect}
          />
        ) : (
          <aside className="fk-panel fk-muted" aria-label="Selected node">
            {selected.length > 1 ? (
              <p>{selected.length} nodes selected. Ctrl+C copies them, Delete removes them.</p>
            ) : (
              <p>Select a node to edit its code, ports and limits.</p>
            )}
            <h3>Shortcuts</h3>
            <ul className="fk-shortcuts">
              <li>Ctrl+S save · Ctrl+Z undo · Ctrl+Shift+Z redo</li>
              <li>Ctrl+C / Ctrl+V copy and paste · Delete remove</li>
              <li>Ctrl+click or Shift+drag to select several</li>
            </ul>
          </aside>
        )}
      </div>
    </div>
  );
}
