from django.apps import AppConfig


class PhiConfig(AppConfig):
    name = "phi"
    verbose_name = "PHI encryption"
    default_auto_field = "django.db.models.BigAutoField"
