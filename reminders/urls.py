from django.urls import path

from reminders import views

urlpatterns = [
    path("", views.policy_view, name="reminders-policy"),
    path("upcoming/", views.upcoming_view, name="reminders-list"),
]
