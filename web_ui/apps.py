from django.apps import AppConfig


class WebUiConfig(AppConfig):
    name = "web_ui"
    verbose_name = "FlowKit web UI"

    def ready(self) -> None:
        from web_ui import sign_in_audit  # noqa: F401 - connects the audit receivers
