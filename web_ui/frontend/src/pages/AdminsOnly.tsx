// A page for admins only: anyone else is told so, and the page (with its requests)
// is never mounted for them.

import type { ReactNode } from "react";
import { Link } from "react-router-dom";
import { useMe } from "../session";

export function AdminsOnly(props: {
  title: string;
  back: { to: string; label: string };
  children: ReactNode;
}) {
  const me = useMe();
  if (me.role === "admin") return <>{props.children}</>;
  return (
    <section className="fk-page">
      <h1>{props.title}</h1>
      <p className="fk-empty" role="alert">
        The audit log is for admins. <Link to={props.back.to}>{props.back.label}</Link>
      </p>
    </section>
  );
}
