"""Staff pages for broadcasts, included at /broadcasts/ (config/urls.py)."""

from django.urls import path

from broadcasts import views

urlpatterns = [
    path("", views.broadcast_list_view, name="broadcasts-list"),
    path("new/", views.broadcast_create_view, name="broadcasts-create"),
    path("<uuid:broadcast_id>/", views.broadcast_detail_view, name="broadcasts-detail"),
    path("<uuid:broadcast_id>/cancel/", views.broadcast_cancel_view, name="broadcasts-cancel"),
]
