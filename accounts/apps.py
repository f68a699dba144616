from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts.dbroles import grant_app_role

        # Infrastructure, not domain logic: after every migrate, the application role gets
        # exactly the table privileges it needs on whatever the owner just created.
        post_migrate.connect(grant_app_role, dispatch_uid="caretext-grant-app-role")
