"""Sign-in: password (django-axes lockout) → TOTP enrolment or verification → dashboard."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login

from accounts import mfa
from accounts.decorators import safe_next
from accounts.forms import LoginForm, OtpForm
from accounts.middleware import AUTH_AT, LAST_SEEN, USER_SESSION_ID
from accounts.models import BackupCodeDevice, TotpDevice, User
from accounts.requestmeta import current_request_meta
from accounts.services import audit_for_user_tenants, user_session_end_current, user_session_start
from audit.events import AuditEventType

LOCKOUT_MESSAGE = "Too many failed sign-in attempts. Try again in 15 minutes or ask your clinic's owner."


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes calls this for a locked-out (email, IP); the same page, status 429."""
    form = LoginForm(initial={"email": (credentials or {}).get("email", "")})
    return render(request, "accounts/login.html", {"form": form, "locked": LOCKOUT_MESSAGE}, status=429)


def _known_user(email: str) -> User | None:
    return User.objects.filter(email=email).first()


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.user.is_verified():
        return redirect(safe_next(request))
    form = LoginForm(request.POST or None)
    if request.method == "GET" or not form.is_valid():
        return render(request, "accounts/login.html", {"form": form, "next": safe_next(request)},
                      status=400 if request.method == "POST" else 200)
    email = form.cleaned_data["email"].strip().lower()
    user = authenticate(request, email=email, password=form.cleaned_data["password"])
    if getattr(request, "axes_locked_out", False):
        audit_for_user_tenants(user=_known_user(email), event_type=AuditEventType.LOGIN_LOCKED_OUT, actor_label=email)
        return lockout_response(request, None, {"email": email})
    if user is None:
        audit_for_user_tenants(user=_known_user(email), event_type=AuditEventType.LOGIN_FAILED, actor_label=email,
                               details={"reason": "bad_credentials"})
        form.add_error(None, "Email or password is incorrect.")
        return render(request, "accounts/login.html", {"form": form, "next": safe_next(request)}, status=400)
    login(request, user)  # new session id
    now = timezone.now().timestamp()
    request.session[AUTH_AT] = now
    request.session[LAST_SEEN] = now
    audit_for_user_tenants(user=user, event_type=AuditEventType.LOGIN_SUCCEEDED, details={"method": "password"})
    target = "accounts-mfa" if mfa.user_has_confirmed_totp(user) else "accounts-mfa-setup"
    response = redirect(target)
    response["Location"] += f"?next={safe_next(request)}"
    return response


def _complete_mfa(request: HttpRequest, device) -> None:
    """Mark the session verified, give it a new id, and register it as a user session."""
    otp_login(request, device)
    request.session.cycle_key()
    meta = current_request_meta()
    session = user_session_start(user=request.user, session_key=request.session.session_key,
                                 ip=meta.get("ip"), user_agent=meta.get("user_agent", ""))
    request.session[USER_SESSION_ID] = str(session.pk)


def _needs_password_step(request: HttpRequest) -> HttpResponse | None:
    if not request.user.is_authenticated:
        return redirect("accounts-login")
    if request.user.is_verified():
        return redirect(safe_next(request))
    return None


@never_cache
@require_http_methods(["GET", "POST"])
def mfa_verify_view(request: HttpRequest) -> HttpResponse:
    early = _needs_password_step(request)
    if early:
        return early
    user = request.user
    if not mfa.user_has_confirmed_totp(user):
        return redirect("accounts-mfa-setup")
    form = OtpForm(request.POST or None)
    context = {"form": form, "next": safe_next(request)}
    if request.method == "GET" or not form.is_valid():
        return render(request, "accounts/mfa_verify.html", context, status=400 if request.method == "POST" else 200)
    code = form.cleaned_data["code"]
    device, throttled = _verify_code(user, code)
    if device is None:
        event = AuditEventType.MFA_THROTTLED if throttled else AuditEventType.MFA_FAILED
        audit_for_user_tenants(user=user, event_type=event)
        form.add_error("code", "Too many attempts: wait a minute and try again." if throttled
                       else "That code is not valid. Codes can be used once.")
        return render(request, "accounts/mfa_verify.html", context, status=429 if throttled else 400)
    _complete_mfa(request, device)
    if isinstance(device, BackupCodeDevice):
        audit_for_user_tenants(user=user, event_type=AuditEventType.MFA_BACKUP_CODE_USED,
                               details={"count": mfa.backup_codes_remaining(user=user)})
        messages.warning(request, f"Backup code used. {mfa.backup_codes_remaining(user=user)} left.")
    audit_for_user_tenants(user=user, event_type=AuditEventType.MFA_VERIFIED,
                           details={"device": "backup_code" if isinstance(device, BackupCodeDevice) else "totp"})
    return redirect(safe_next(request))


def _verify_code(user: User, code: str):
    """(device, throttled): the device that accepted ``code``, else None and whether throttled."""
    devices = list(TotpDevice.objects.filter(user=user, confirmed=True))
    if mfa.looks_like_backup_code(code):
        devices = list(BackupCodeDevice.objects.filter(user=user, confirmed=True))
    throttled = False
    for device in devices:
        with transaction.atomic():
            device = type(device).objects.select_for_update().get(pk=device.pk)
            allowed, _ = device.verify_is_allowed()
            if not allowed:
                throttled = True
                continue
            if device.verify_token(code):  # django-otp refuses a TOTP step already used
                return device, False
    return None, throttled


@never_cache
@require_http_methods(["GET", "POST"])
def mfa_setup_view(request: HttpRequest) -> HttpResponse:
    early = _needs_password_step(request)
    if early:
        return early
    user = request.user
    if mfa.user_has_confirmed_totp(user):
        return redirect("accounts-mfa")
    device = mfa.totp_device_unconfirmed(user=user)
    form = OtpForm(request.POST or None)
    context = {"form": form, "qr_svg": mfa.totp_qr_svg(device), "secret": mfa.totp_secret_base32(device),
               "next": safe_next(request)}
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            device = TotpDevice.objects.select_for_update().get(pk=device.pk)
            if not device.verify_is_allowed()[0]:
                audit_for_user_tenants(user=user, event_type=AuditEventType.MFA_THROTTLED)
                form.add_error("code", "Too many attempts: wait a minute and try again.")
                return render(request, "accounts/mfa_setup.html", context, status=429)
            if device.verify_token(form.cleaned_data["code"]):
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                codes = mfa.backup_codes_generate(user=user)
                _complete_mfa(request, device)
                audit_for_user_tenants(user=user, event_type=AuditEventType.MFA_ENROLLED, details={"device": "totp"})
                return render(request, "accounts/backup_codes.html", {"codes": codes, "next": safe_next(request)})
        audit_for_user_tenants(user=user, event_type=AuditEventType.MFA_FAILED, details={"reason": "enrolment"})
        form.add_error("code", "That code did not match. Check your phone's clock and try the newest code.")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/mfa_setup.html", context, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        user = request.user
        user_session_end_current(request=request, reason="logout")
        audit_for_user_tenants(user=user, event_type=AuditEventType.LOGOUT)
    logout(request)
    messages.info(request, "You are signed out.")
    return redirect("accounts-login")
