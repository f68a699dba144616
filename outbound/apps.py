from django.apps import AppConfig


class OutboundConfig(AppConfig):
    name = "outbound"
    default_auto_field = "django.db.models.BigAutoField"
