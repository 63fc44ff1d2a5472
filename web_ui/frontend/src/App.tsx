// The page frame: navigation, the logged-in user, and the routes under /app/.

import { useEffect, useState } from "react";
import { createBrowserRouter, Link, NavLink, Outlet, RouterProvider } from "react-router-dom";
import { api, csrfToken, messageOf, type Me } from "./api";
import { AuditPage } from "./pages/AuditPage";
import { EditorPage } from "./pages/EditorPage";
import { PipelinesPage } from "./pages/PipelinesPage";
import { ResourcesPage } from "./pages/ResourcesPage";
import { RunPage } from "./pages/RunPage";
import { RunsPage } from "./pages/RunsPage";
import { SecretAuditPage, SecretsPage } from "./pages/SecretsPage";
import { MeContext } from "./session";

function Frame() {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.me().then(setMe, (exc) => setError(messageOf(exc)));
  }, []);
  return (
    <div className="fk-app">
      <header className="fk-header">
        <Link className="fk-brand" to="/app/">
          FlowKit
        </Link>
        <nav aria-label="Main">
          <NavLink to="/app/" end>
            Pipelines
          </NavLink>
          <NavLink to="/app/runs">Runs</NavLink>
          <NavLink to="/app/resources">Resources</NavLink>
          <NavLink to="/app/secrets">Secrets</NavLink>
          {me?.role === "admin" ? <NavLink to="/app/audit">Audit</NavLink> : null}
          <a href="/api/docs">API</a>
        </nav>
        {me ? (
          <form method="post" action="/accounts/logout/" className="fk-user">
            <input type="hidden" name="csrfmiddlewaretoken" value={csrfToken()} />
            <span>
              {me.username} <span className="fk-role">{me.role ?? "no role"}</span>
            </span>
            <button type="submit">Log out</button>
          </form>
        ) : null}
      </header>
      <main className="fk-main">
        {error ? (
          <p className="fk-error" role="alert">
            {error}
          </p>
        ) : me === null ? (
          <p className="fk-muted">Loading…</p>
        ) : me.role === null ? (
          <p className="fk-empty" role="alert">
            Your account has no role yet. Ask an admin to make you a viewer or an editor.
          </p>
        ) : (
          <MeContext.Provider value={me}>
            <Outlet />
          </MeContext.Provider>
        )}
      </main>
    </div>
  );
}

function NotFound() {
  return (
    <p className="fk-empty">
      There is no such page. <Link to="/app/">Back to the pipelines</Link>
    </p>
  );
}

const router = createBrowserRouter([
  {
    path: "/app",
    element: <Frame />,
    children: [
      { index: true, element: <PipelinesPage /> },
      { path: "pipelines/:pipelineId", element: <EditorPage /> },
      { path: "runs/:runId", element: <RunPage /> },
      { path: "runs", element: <RunsPage /> },
      { path: "resources", element: <ResourcesPage /> },
      { path: "secrets", element: <SecretsPage /> },
      { path: "secrets/audit", element: <SecretAuditPage /> },
      { path: "audit", element: <AuditPage /> },
      { path: "*", element: <NotFound /> },
    ],
  },
]);

export function App() {
  return <RouterProvider router={router} />;
}
