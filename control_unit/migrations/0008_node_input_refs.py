"""A node's inputs become references to its upstream nodes' outputs (NodeRun.input_refs)
instead of copies. Rows written before keep their copied inputs, which readers use as
they are (control_unit.node_inputs)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("control_unit", "0007_fcb_counters"),
    ]

    operations = [
        migrations.AddField(
            model_name="noderun",
            name="input_refs",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
