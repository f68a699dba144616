from django.apps import AppConfig


class PhiTestAppConfig(AppConfig):
    name = "tests.phi_testapp"
    label = "phi_testapp"
    default_auto_field = "django.db.models.BigAutoField"
