from django.apps import AppConfig


class TraceMonitorConfig(AppConfig):
    name = "trace_monitor"
