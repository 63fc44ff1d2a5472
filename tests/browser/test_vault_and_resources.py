"""The secret vault page and its audit log, a secret used by a node and masked on the
monitor, the runs history with its filters and figures, and the resource monitor."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from control_unit.models import Run
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.browser.conftest import log_in, make_user
from tests.browser.runs import chain, create_pipeline, graph_node, node_code, node_panel, start_run
from tests.integration.conftest import wait_for_run

SECRET_VALUE = "tk-4f9Q'quoted\"-value"
USES_SECRET = node_code(
    "token = '''<<<secret::API_TOKEN>>>'''\n"
    "print('using', token)\n"
    "return [], {'out': token, 'length': len(token)}, 'used the token'"
)


def test_a_secret_stored_in_the_vault_is_masked_in_the_nodes_output(editor_page: Page):
    page = editor_page
    page.get_by_role("link", name="Secrets").click()
    expect(page).to_have_url(re.compile(r"/app/secrets$"))
    expect(page.get_by_text("No secrets yet.")).to_be_visible()
    form = page.get_by_role("form", name="Add a secret")
    form.get_by_label("Name").fill("API_TOKEN")
    form.get_by_label("Description").fill("the test service")
    form.get_by_label("Value").fill(SECRET_VALUE)
    form.get_by_role("button", name="Add secret").click()
    expect(page.get_by_role("status")).to_contain_text("Secret API_TOKEN saved.")
    expect(page.locator('tr[data-secret="API_TOKEN"]')).to_contain_text("the test service")
    expect(form.get_by_label("Value")).to_have_value("")  # write-only: gone once sent
    expect(page.locator("body")).not_to_contain_text("4f9Q")

    document = chain(["secretive"], {"secretive": USES_SECRET})
    document["nodes"][0]["outputs"] = ["out", "length"]
    run_id = start_run(page, create_pipeline(page, "uses a secret", document), {"in": 0})
    page.goto(f"/app/runs/{run_id}")
    expect(graph_node(page, "secretive")).to_have_attribute("data-state", "succeeded", timeout=120_000)
    graph_node(page, "secretive").click()
    outputs = node_panel(page).get_by_test_id("node-outputs")
    expect(outputs).to_contain_text('"***"')
    expect(outputs).to_contain_text(str(len(SECRET_VALUE)))  # the node saw the real value
    expect(node_panel(page).get_by_test_id("node-logs")).to_contain_text("using ***")
    expect(page.locator("body")).not_to_contain_text("4f9Q")

    # Replace and delete from the vault page.
    page.goto("/app/secrets")
    row = page.locator('tr[data-secret="API_TOKEN"]')
    expect(row).to_contain_text(re.compile(r"\d"))  # last used: a date now, not "never"
    row.get_by_role("button", name="Replace value").click()
    row.get_by_label("New value of API_TOKEN").fill("a brand new value")
    row.get_by_role("button", name="Save value").click()
    expect(page.get_by_role("status")).to_have_text("The value of API_TOKEN was replaced.")
    row.get_by_role("button", name="Delete", exact=True).click()
    row.get_by_role("button", name="Delete API_TOKEN").click()
    expect(page.get_by_role("status")).to_have_text("Secret API_TOKEN deleted.")
    expect(page.get_by_text("No secrets yet.")).to_be_visible()


def test_an_admin_reads_the_audit_logs_and_a_viewer_can_neither_read_them_nor_edit_secrets(page: Page):
    make_user("ada", "admin")
    log_in(page, "ada", "/app/secrets")
    form = page.get_by_role("form", name="Add a secret")
    form.get_by_label("Name").fill("DB_PASSWORD")
    form.get_by_label("Value").fill("correct horse battery")
    form.get_by_role("button", name="Add secret").click()
    expect(page.locator('tr[data-secret="DB_PASSWORD"]')).to_be_visible()
    page.get_by_role("link", name="Audit log").click()
    expect(page).to_have_url(re.compile(r"/app/secrets/audit$"))
    log = page.get_by_role("table", name="Audit log")
    expect(log.locator("tbody tr").first).to_contain_text("create")
    expect(log.locator("tbody tr").first).to_contain_text("DB_PASSWORD")
    expect(log).to_contain_text("ada")

    # The whole audit log: the sign-in and the secret, filtered by kind from the URL.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    events = page.get_by_role("table", name="Audit events")
    expect(events.locator('tr[data-action="auth.sign_in"]').first).to_contain_text("ada")
    expect(events.locator('tr[data-action="auth.sign_in"]').first).to_contain_text("web · 127.0.0.1")
    expect(events.locator('tr[data-action="secret.created"]')).to_contain_text("DB_PASSWORD")
    page.get_by_label("Kind").select_option(label="secrets")
    expect(page).to_have_url(re.compile(r"/app/audit\?action=secret\.$"))
    expect(events.locator("tbody tr")).to_have_count(1)
    expect(events).not_to_contain_text("correct horse battery")
    page.get_by_role("button", name="Log out").click()

    make_user("vic", "viewer")
    log_in(page, "vic", "/app/secrets")
    expect(page.locator('tr[data-secret="DB_PASSWORD"]')).to_be_visible()
    expect(page.get_by_role("form", name="Add a secret")).to_have_count(0)
    for name in ("Replace value", "Delete"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_text("Your role (viewer) can see secret names only.")).to_be_visible()
    page.goto("/app/secrets/audit")
    expect(page.get_by_role("alert")).to_contain_text("The audit log is for admins.")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit")).to_have_count(0)
    page.goto("/app/audit")
    expect(page.get_by_role("alert")).to_contain_text("The audit log is for admins.")


def test_the_runs_history_filters_by_pipeline_and_state_and_shows_figures(editor_page: Page):
    page = editor_page
    good = create_pipeline(page, "good pipeline", chain(["a", "b"]))
    bad = create_pipeline(page, "bad pipeline", chain(["x"], {"x": node_code("raise ValueError('no good')")}))
    from control_unit.models import Run

    runs = [
        start_run(page, good, {"in": 1}),
        start_run(page, good, {"in": 2}),
        start_run(page, bad, {"in": 3}),
    ]
    for run_id in runs:
        wait_for_run(Run.objects.get(id=run_id))

    page.get_by_role("link", name="Runs").click()
    table = page.get_by_role("table", name="Runs")
    expect(table.locator("tbody tr")).to_have_count(3)
    page.get_by_label("Pipeline").select_option(label="good pipeline")
    expect(page).to_have_url(re.compile(f"pipeline={good}"))
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("figure-success-rate")).to_have_text("100 %")
    expect(page.get_by_role("table", name="Node durations").locator("tbody tr")).to_have_count(2)

    page.goto("/app/runs?state=failed")  # the filters are in the URL
    expect(page.get_by_label("State")).to_have_value("failed")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text("bad pipeline")
    page.get_by_label("From").fill("2001-01-01")
    page.get_by_label("To").fill("2001-01-02")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"since=2001-01-01"))
    expect(page.get_by_text("No runs match these filters.")).to_be_visible()
    page.get_by_role("link", name="Clear filters").click()
    expect(table.locator("tbody tr")).to_have_count(3)
    table.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/app/runs/[0-9a-f-]+$"))
    expect(page.get_by_test_id("run-state")).to_be_visible()


def test_the_runs_filters_work_from_the_keyboard_and_follow_back_and_forward(editor_page: Page):
    page = editor_page
    page.goto("/app/runs")
    state = page.get_by_label("State")
    state.focus()
    page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(r"/app/runs\?state=queued$"))
    expect(state).to_be_focused()  # the field in use keeps the focus
    page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(r"\?state=running$"))
    expect(state).to_be_focused()
    page.go_back()
    expect(page).to_have_url(re.compile(r"\?state=queued$"))
    expect(state).to_have_value("queued")
    page.go_back()
    expect(state).to_have_value("")


def test_the_runs_history_shows_older_runs_page_by_page(editor_page: Page):
    page = editor_page
    pipeline = do_create_pipeline("busy pipeline", chain(["a"]))
    version = pipeline.latest_version()
    # Finished runs stored directly: 205 real runs would take minutes, and the page
    # only lists them.
    Run.objects.bulk_create(
        Run(pipeline=pipeline, version=version, state="succeeded", input={"in": n}) for n in range(205)
    )
    page.goto(f"/app/runs?pipeline={pipeline.id}")
    table = page.get_by_role("table", name="Runs")
    expect(table.locator("tbody tr")).to_have_count(200)
    expect(page.get_by_test_id("runs-shown")).to_contain_text("200 runs shown.")
    page.get_by_role("button", name="Show older runs").click()
    expect(table.locator("tbody tr")).to_have_count(205)
    expect(page.get_by_test_id("runs-shown")).to_have_text("205 runs shown, the oldest included.")
    rows = table.locator("tbody tr").evaluate_all("rows => rows.map(row => row.dataset.run)")
    assert sorted(rows) == sorted(str(run_id) for run_id in pipeline.runs.values_list("id", flat=True))


def test_the_resource_monitor_lists_the_worker_and_its_npus(editor_page: Page, celery_worker):
    page = editor_page
    page.get_by_role("link", name="Resources").click()
    expect(page).to_have_url(re.compile(r"/app/resources$"))
    expect(page.get_by_test_id("connection")).to_have_text("live")
    card = page.locator(f'[data-worker="{celery_worker.name}"]')
    expect(card).to_be_visible()
    expect(card.get_by_role("heading", level=2)).to_contain_text("online")
    expect(card.get_by_role("meter", name="Host CPU")).to_be_visible()
    expect(card.get_by_role("meter", name="Host memory")).to_have_attribute(
        "aria-valuetext", re.compile(" of ")
    )
    expect(card.get_by_test_id("host-network")).to_have_text(re.compile(r"/s in, .*/s out$"))

    busy = node_code(
        "end = time.time() + 20\nwhile time.time() < end:\n    pass\nreturn [], {'out': 1}, 'burnt'"
    )
    start_run(page, create_pipeline(page, "burner", chain(["burn"], {"burn": busy})), {"in": 0})
    # The node runs in its dedicated NPU, listed with its pipeline and node.
    npu_row = card.locator('tr[data-kind="dedicated"]', has_text="burn")
    expect(npu_row).to_be_visible(timeout=60_000)
    expect(npu_row.get_by_test_id("npu-pipeline")).to_have_text("burner")
    expect(npu_row.get_by_test_id("npu-idle")).to_contain_text("running: run ")
    expect(npu_row.get_by_test_id("npu-cpu")).to_contain_text("%", timeout=30_000)  # a live CPU sample

    # From the NPU to its run's monitor, where the node's CPU chart fills live.
    npu_row.get_by_role("link", name=re.compile(r"^run ")).click()
    expect(page).to_have_url(re.compile(r"/app/runs/[0-9a-f-]+$"))
    page.locator('.react-flow__node[data-id="burn"]').click()
    expect(node_panel(page).get_by_role("img", name=re.compile(r"^CPU over"))).to_be_visible(timeout=30_000)
    expect(node_panel(page).get_by_role("img", name=re.compile(r"^Memory"))).to_be_visible()


def test_the_resource_monitor_lists_each_nodes_dedicated_npu_at_1024_px(editor_page: Page, celery_worker):
    page = editor_page
    page.set_viewport_size({"width": 1024, "height": 768})
    name = "a pipeline with a rather long name, to see that the table still fits"
    quick = node_code("return [], {'out': 1}, 'done'")
    pipeline = do_create_pipeline(name, chain(["quick"], {"quick": quick}))
    version = pipeline.latest_version()
    assert version is not None
    run = wait_for_run(do_start_run(version, {"in": 0}))
    assert run.state == "succeeded"

    page.goto("/app/resources")
    card = page.locator(f'[data-worker="{celery_worker.name}"]')
    table = card.get_by_role("table", name=f"Dedicated NPUs of {celery_worker.name}")
    row = table.locator("tr[data-npu]", has_text=name[:20])
    expect(row).to_be_visible(timeout=30_000)
    expect(row.get_by_test_id("npu-node")).to_have_text("quick")
    # Counted by its worker process every few seconds, then sent with a heartbeat.
    expect(row.get_by_test_id("npu-executions")).to_have_text("1", timeout=30_000)
    expect(row.get_by_test_id("npu-idle")).to_contain_text(re.compile(r"\(idle \d+ (s|min)\)$"))
    expect(row.get_by_test_id("npu-memory")).to_have_text(re.compile(r" MiB of 256 MiB$"))
    # Readable at 1024 px: nothing of the card is cut off or scrolls sideways.
    assert card.evaluate("card => card.scrollWidth <= card.clientWidth")
    assert table.evaluate("table => table.getBoundingClientRect().right <= window.innerWidth")

    # The pipeline leads to its editor.
    row.get_by_test_id("npu-pipeline").get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/app/pipelines/{pipeline.id}$"))
