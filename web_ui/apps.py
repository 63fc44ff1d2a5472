from django.apps import AppConfig


class WebUiConfig(AppConfig):
    name = "web_ui"
    verbose_name = "FlowKit web UI"
