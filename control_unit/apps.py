from django.apps import AppConfig


class ControlUnitConfig(AppConfig):
    name = "control_unit"

    def ready(self) -> None:
        from control_unit import audit
        from secret_manager.signals import secret_audited

        secret_audited.connect(audit.record_secret_event, dispatch_uid="control_unit.audit.secret")
