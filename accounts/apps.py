from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _last_login_record(sender, user, **kwargs) -> None:
    """Django's ``update_last_login`` without ``save()``: a sign-in is already in the audit trail
    (``auth.login_succeeded``), so field history need not fetch the user again and log the new
    timestamp as a change of the user on every sign-in."""
    from django.utils import timezone

    user.last_login = timezone.now()
    type(user)._default_manager.filter(pk=user.pk).update(last_login=user.last_login)


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import user_logged_in
        from django.contrib.auth.models import update_last_login

        from accounts.dbroles import grant_app_role

        # Infrastructure, not domain logic: after every migrate, the application role gets
        # exactly the table privileges it needs on whatever the owner just created.
        post_migrate.connect(grant_app_role, dispatch_uid="caretext-grant-app-role")
        user_logged_in.disconnect(update_last_login, dispatch_uid="update_last_login")
        user_logged_in.connect(_last_login_record, dispatch_uid="caretext-last-login")
