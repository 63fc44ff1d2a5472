// Node templates to drag onto the canvas; each also has a button, for the keyboard.

import { memo } from "react";
import { TEMPLATES, type NodeTemplate } from "./templates";

export const TEMPLATE_MIME = "application/x-flowkit-template";

function PaletteView({ onAdd }: { onAdd: (template: NodeTemplate) => void }) {
  return (
    <aside className="fk-palette" aria-label="Node templates">
      <h2>Nodes</h2>
      <p className="fk-muted">Drag onto the canvas, or press Add.</p>
      <ul>
        {TEMPLATES.map((template) => (
          <li
            key={template.key}
            className="fk-template"
            draggable
            data-template={template.key}
            onDragStart={(event) => {
              event.dataTransfer.setData(TEMPLATE_MIME, template.key);
              event.dataTransfer.effectAllowed = "copy";
            }}
          >
            <strong>{template.title}</strong>
            <small>{template.description}</small>
            <button type="button" onClick={() => onAdd(template)} aria-label={`Add ${template.title}`}>
              Add
            </button>
          </li>
        ))}
      </ul>
    </aside>
  );
}

export const Palette = memo(PaletteView);
