"""Staff pages for secure messaging, included at /inbox/ (config/urls.py)."""

from django.urls import path

from messaging import views_staff as views

urlpatterns = [
    path("", views.inbox_view, name="messaging-inbox"),
    path("live/", views.inbox_live_view, name="messaging-inbox-live"),
    path("unknown/", views.unknown_view, name="messaging-unknown"),
    path("unknown/<uuid:inbound_id>/triage/", views.unknown_triage_view, name="messaging-unknown-triage"),
    path("t/<uuid:thread_id>/", views.thread_view, name="messaging-thread"),
    path("t/<uuid:thread_id>/messages/", views.thread_messages_view, name="messaging-thread-messages"),
    path("t/<uuid:thread_id>/reply/", views.thread_reply_view, name="messaging-thread-reply"),
    path("t/<uuid:thread_id>/note/", views.thread_note_view, name="messaging-thread-note"),
    path("t/<uuid:thread_id>/assign/", views.thread_assign_view, name="messaging-thread-assign"),
    path("t/<uuid:thread_id>/status/", views.thread_status_view, name="messaging-thread-status"),
    path("t/<uuid:thread_id>/link/", views.thread_link_view, name="messaging-thread-link"),
    path("m/<uuid:message_id>/release/", views.message_release_view, name="messaging-message-release"),
    path("compose/", views.compose_find_view, name="messaging-compose-find"),
    path("compose/<uuid:patient_id>/", views.compose_view, name="messaging-compose"),
    path("templates/", views.templates_view, name="messaging-templates"),
    path("templates/<uuid:template_id>/delete/", views.template_delete_view, name="messaging-template-delete"),
    path("sms-outbox/", views.sms_outbox_view, name="messaging-sms-outbox"),
]
