// Filter forms whose filters live in the URL (the runs history, the audit log), so that
// a filtered list can be bookmarked and shared. The fields follow the URL (back and
// forward) without the form being re-mounted, which would take the keyboard's focus
// from the field in use; submitting the form puts its fields in the URL.

import { useEffect, useRef, type DependencyList, type FormEvent } from "react";
import { useSearchParams } from "react-router-dom";

/** ``names`` must be a constant (the same array at every render). */
export function useUrlFilters<Name extends string>(names: readonly Name[], refreshWhen: DependencyList = []) {
  const [params, setParams] = useSearchParams();
  const query = params.toString();
  const values = Object.fromEntries(names.map((name) => [name, params.get(name) ?? ""])) as Record<
    Name,
    string
  >;
  const form = useRef<HTMLFormElement>(null);

  // Also when ``refreshWhen`` changes: a select's options may arrive after the URL.
  useEffect(() => {
    const fields = form.current?.elements;
    if (!fields) return;
    const wanted = new URLSearchParams(query);
    for (const name of names) {
      const field = fields.namedItem(name);
      const value = wanted.get(name) ?? "";
      if (
        (field instanceof HTMLInputElement || field instanceof HTMLSelectElement) &&
        field.value !== value
      ) {
        field.value = value;
      }
    }
  }, [query, names, ...refreshWhen]);

  function apply(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const data = new FormData(event.currentTarget);
    const next = new URLSearchParams();
    for (const name of names) {
      const value = String(data.get(name) ?? "").trim();
      if (value) next.set(name, value);
    }
    setParams(next);
  }

  return { values, form, apply, filtered: query !== "" };
}
