from django.urls import path

from outbound import views

urlpatterns = [
    path("", views.endpoints_view, name="outbound-endpoints"),
    path("<uuid:endpoint_id>/deactivate/", views.endpoint_deactivate_view, name="outbound-endpoint-deactivate"),
]
