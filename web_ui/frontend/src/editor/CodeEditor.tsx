// CodeMirror 6 with Python highlighting. The view lives as long as the component;
// a value changed from outside (undo, another node selected) replaces the text.

import { python } from "@codemirror/lang-python";
import { Annotation, EditorState } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import { basicSetup } from "codemirror";
import { useEffect, useRef } from "react";

// Marks text set from outside, so it is not reported back as an edit.
const External = Annotation.define<boolean>();

interface Props {
  value: string;
  readOnly: boolean;
  onChange: (value: string) => void;
  label: string;
}

export function CodeEditor({ value, readOnly, onChange, label }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const onChangeRef = useRef(onChange);
  onChangeRef.current = onChange;

  useEffect(() => {
    if (!host.current) return;
    const created = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: value,
        extensions: [
          basicSetup,
          python(),
          EditorState.readOnly.of(readOnly),
          EditorView.editable.of(!readOnly),
          EditorView.contentAttributes.of({ "aria-label": label }),
          EditorView.updateListener.of((update) => {
            if (update.docChanged && !update.transactions.some((t) => t.annotation(External))) {
              onChangeRef.current(update.state.doc.toString());
            }
          }),
        ],
      }),
    });
    view.current = created;
    return () => {
      created.destroy();
      view.current = null;
    };
    // Built once per mount (and mode); value changes are applied by the effect below.
  }, [readOnly, label]);

  useEffect(() => {
    const current = view.current;
    if (current && current.state.doc.toString() !== value) {
      current.dispatch({
        changes: { from: 0, to: current.state.doc.length, insert: value },
        annotations: External.of(true),
      });
    }
  }, [value]);

  return <div className="fk-code" ref={host} />;
}
