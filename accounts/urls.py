from django.urls import path

from accounts import apis
from accounts.views import auth, me, staff

urlpatterns = [
    path("", staff.dashboard_view, name="dashboard"),
    path("accounts/login/", auth.login_view, name="accounts-login"),
    path("accounts/logout/", auth.logout_view, name="accounts-logout"),
    path("accounts/mfa/", auth.mfa_verify_view, name="accounts-mfa"),
    path("accounts/mfa/setup/", auth.mfa_setup_view, name="accounts-mfa-setup"),
    path("accounts/sessions/", me.sessions_view, name="accounts-sessions"),
    path("accounts/sessions/revoke-others/", me.sessions_revoke_others_view, name="accounts-sessions-revoke-others"),
    path("accounts/sessions/<uuid:session_id>/revoke/", me.session_revoke_view, name="accounts-session-revoke"),
    path("accounts/session/keepalive/", me.session_keepalive_view, name="accounts-session-keepalive"),
    path("accounts/switch/", me.tenant_switch_view, name="accounts-tenant-switch"),
    path("invite/<str:token>/", me.invitation_accept_view, name="accounts-invitation-accept"),
    path("settings/", staff.settings_view, name="accounts-settings"),
    path("settings/users/", staff.users_view, name="accounts-users"),
    path("settings/users/<uuid:membership_id>/role/", staff.membership_role_view, name="accounts-membership-role"),
    path("settings/users/<uuid:membership_id>/deactivate/", staff.membership_deactivate_view,
         name="accounts-membership-deactivate"),
    path("settings/users/<uuid:membership_id>/reactivate/", staff.membership_reactivate_view,
         name="accounts-membership-reactivate"),
    path("settings/invitations/<uuid:invitation_id>/revoke/", staff.invitation_revoke_view,
         name="accounts-invitation-revoke"),
    path("settings/api-keys/", staff.api_keys_view, name="accounts-api-keys"),
    path("settings/api-keys/<uuid:api_key_id>/revoke/", staff.api_key_revoke_view, name="accounts-api-key-revoke"),
    path("settings/clinic/", staff.clinic_settings_view, name="accounts-clinic"),
    path("settings/clinic/sms/", staff.clinic_sms_settings_view, name="accounts-clinic-sms"),
    path("api/v1/me", apis.WhoAmIApi.as_view(), name="api-accounts-me"),
]
