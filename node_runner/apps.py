from django.apps import AppConfig


class NodeRunnerConfig(AppConfig):
    name = "node_runner"
