"""What one password sign-in writes: the last sign-in time on the user and one security event per
clinic, and not a field-history row per sign-in (the audit trail already has the sign-in)."""

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from accounts.models import User
from accounts.permissions import Role
from accounts.tenancy import tenant_scope, user_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from tests.factories import PASSWORD, make_member


def _history(user):
    return LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(User), object_pk=str(user.pk))


def test_sign_in_sets_last_login_without_a_history_row(client, alice, tenant_a):
    User.objects.filter(pk=alice.pk).update(last_login=None)
    history = _history(alice).count()
    before = timezone.now()
    response = client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.last_login is not None and alice.last_login >= before
    assert _history(alice).count() == history
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.LOGIN_SUCCEEDED, actor_user=alice).count() == 1


def test_sign_in_is_recorded_in_every_clinic_of_the_user(client, tenant_a, tenant_b):
    user = make_member(tenant=tenant_a, role=Role.CLINICIAN, email="two-clinics@example.test")
    make_member(tenant=tenant_b, role=Role.STAFF, email="two-clinics@example.test")
    assert client.post("/accounts/login/", {"email": user.email, "password": PASSWORD}).status_code == 302
    for tenant in (tenant_a, tenant_b):
        with tenant_scope(tenant):
            assert AuditEvent.objects.filter(event_type=AuditEventType.LOGIN_SUCCEEDED, actor_user=user).count() == 1


def test_security_event_inside_a_user_scope_still_finds_the_clinics(alice, tenant_a):
    from accounts.services import audit_for_user_tenants

    with user_scope(alice.pk):
        assert audit_for_user_tenants(user=alice, event_type=AuditEventType.SESSION_REVOKED) == 1
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.SESSION_REVOKED, actor_user=alice).exists()
