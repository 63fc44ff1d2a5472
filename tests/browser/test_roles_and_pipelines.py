"""The pipelines page (create, search, rename, duplicate, export, import, delete)
and roles shown honestly: a viewer sees no edit or run controls."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from tests.browser.canvas import canvas_node, select_node
from tests.browser.conftest import keep_screenshot
from tests.browser.pipelines import two_node_pipeline

ROWS = "tbody tr"


def test_a_viewer_sees_pipelines_read_only(viewer_page: Page):
    page = viewer_page
    pipeline_id = two_node_pipeline("shared pipeline")
    page.goto("/app/")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.get_by_role("link", name="shared pipeline")).to_be_visible()
    for name in ("Create pipeline", "Import JSON…", "Rename", "Duplicate", "Delete"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("button", name="Export")).to_be_visible()

    page.goto(f"/app/pipelines/{pipeline_id}")
    expect(canvas_node(page, "a")).to_be_visible()
    expect(page.get_by_text("Read only: editing needs the editor role.")).to_be_visible()
    for name in ("Save", "Run", "Undo", "Redo", "Auto layout", "Test node"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    expect(page.get_by_role("complementary", name="Node templates")).to_have_count(0)
    select_node(page, "a")
    expect(page.get_by_label("Node code")).to_have_attribute("contenteditable", "false")
    expect(page.get_by_label("Label")).to_have_attribute("readonly", "")


def test_an_editor_manages_pipelines_from_the_list(editor_page: Page, tmp_path):
    page = editor_page
    expect(page.get_by_text("No pipelines yet.")).to_be_visible()
    page.get_by_label("New pipeline name").fill("orders")
    page.get_by_role("button", name="Create pipeline").click()
    expect(canvas_node(page, "start")).to_be_visible()
    page.get_by_role("link", name="Pipelines", exact=True).first.click()

    row = page.locator('tr[data-pipeline="orders"]')
    row.get_by_role("button", name="Rename").click()
    page.get_by_label("New name").fill("orders v2")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("status")).to_have_text("Renamed to “orders v2”.")

    page.locator('tr[data-pipeline="orders v2"]').get_by_role("button", name="Duplicate").click()
    expect(page.locator(ROWS)).to_have_count(2)
    expect(page.get_by_role("link", name="orders v2 (copy)")).to_be_visible()

    with page.expect_download() as download_info:
        page.locator('tr[data-pipeline="orders v2"]').get_by_role("button", name="Export").click()
    exported = tmp_path / "export.json"
    download_info.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert data["name"] == "orders v2"
    assert [node["id"] for node in data["document"]["nodes"]] == ["start"]

    data["name"] = "imported orders"
    exported.write_text(json.dumps(data))
    page.get_by_label("Import a pipeline file").set_input_files(str(exported))
    expect(page.get_by_role("status")).to_have_text("Imported “imported orders”.")
    expect(page.locator(ROWS)).to_have_count(3)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    page.get_by_label("Import a pipeline file").set_input_files(str(bad))
    expect(page.get_by_role("alert")).to_contain_text("bad.json is not JSON")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"schema_version": 1, "nodes": [], "edges": []}))
    page.get_by_label("Import a pipeline file").set_input_files(str(empty))
    expect(page.get_by_role("alert")).to_contain_text("empty.json was not imported: 1 problem")
    expect(page.locator(ROWS)).to_have_count(3)

    page.get_by_label("Search pipelines").fill("copy")
    expect(page.locator(ROWS)).to_have_count(1)
    page.get_by_label("Search pipelines").fill("nothing like this")
    expect(page.get_by_text("No pipeline matches “nothing like this”.")).to_be_visible()
    page.get_by_label("Search pipelines").fill("")
    expect(page.locator(ROWS)).to_have_count(3)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('tr[data-pipeline="imported orders"]').get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Deleted “imported orders”.")
    expect(page.locator(ROWS)).to_have_count(2)


def test_leaving_with_unsaved_changes_asks_first(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    page.get_by_role("button", name="Add Transform").click()
    expect(page.get_by_test_id("version")).to_have_text("v1 · unsaved changes")
    messages: list[str] = []

    def dismiss(dialog):
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("toolbar", name="Editor").get_by_role("link", name="Pipelines").click()
    expect(canvas_node(page, "transform")).to_be_visible()  # still here
    assert messages == ["This pipeline has unsaved changes. Leave without saving?"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("toolbar", name="Editor").get_by_role("link", name="Pipelines").click()
    expect(page.get_by_role("heading", name="Pipelines")).to_be_visible()


def test_closing_the_tab_with_unsaved_changes_asks_first(editor_page: Page, request):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    page.get_by_role("button", name="Add Transform").click()
    expect(page.get_by_test_id("version")).to_have_text("v1 · unsaved changes")
    keep_screenshot(page, request.node.name)
    with page.expect_event("dialog") as dialog_info:
        page.close(run_before_unload=True)
    assert dialog_info.value.type == "beforeunload"
    with page.expect_event("close"):
        dialog_info.value.accept()
