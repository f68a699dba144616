from django.urls import path

from integrations.hl7.apis import Hl7MessageApi

urlpatterns = [
    path("", Hl7MessageApi.as_view(), name="hl7-message"),
]
