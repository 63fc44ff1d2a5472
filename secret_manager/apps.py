from django.apps import AppConfig


class SecretManagerConfig(AppConfig):
    name = "secret_manager"
