"""The FCB's counters (control_unit.fcb: NodeRecord.waiting, Fcb.unfinished and
Fcb.failed), computed for the runs that have not ended yet."""

from django.db import migrations, models

TERMINAL = ("succeeded", "failed", "skipped", "cancelled")


def count(apps, schema_editor):
    Run = apps.get_model("control_unit", "Run")
    NodeRun = apps.get_model("control_unit", "NodeRun")
    for run in Run.objects.filter(state__in=("queued", "running", "paused")).select_related("version"):
        document = run.version.document
        order = [node["id"] for node in document["nodes"]]
        continues = {node["id"] for node in document["nodes"] if node.get("continue_on_error")}
        upstream = {node_id: set() for node_id in order}
        for edge in document["edges"]:
            upstream[edge["target"]].add(edge["source"])
        states = dict(NodeRun.objects.filter(run=run).values_list("node_id", "state"))
        for node_id, sources in upstream.items():
            waiting = sum(1 for source in sources if states.get(source) not in TERMINAL)
            NodeRun.objects.filter(run=run, node_id=node_id).update(waiting=waiting)
        failed = [n for n in order if states.get(n) == "failed" and n not in continues]
        run.unfinished = sum(1 for state in states.values() if state not in TERMINAL)
        run.failed_node = failed[0] if failed else ""
        run.save(update_fields=["unfinished", "failed_node"])


class Migration(migrations.Migration):
    dependencies = [
        ("control_unit", "0006_node_test_cancel"),
    ]

    operations = [
        migrations.AddField(
            model_name="noderun",
            name="waiting",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="unfinished",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="failed_node",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(count, migrations.RunPython.noop),
    ]
