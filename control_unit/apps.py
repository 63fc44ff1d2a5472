from django.apps import AppConfig


class ControlUnitConfig(AppConfig):
    name = "control_unit"
