"""URL configuration for the example wiki."""

from django.urls import path
from pages import views as page_views

from . import views

urlpatterns = [
    path("", page_views.page_list, name="page_list"),
    path("pages/<slug:slug>/", page_views.page_detail, name="page_detail"),
    path("hello/", views.hello, name="hello"),
    path("whoami/", views.whoami, name="whoami"),
    path("cookies/", views.cookies, name="cookies"),
    path("echo/", views.echo, name="echo"),
    path("stream/", views.stream, name="stream"),
    path("boom/", views.boom, name="boom"),
    path("slow/", views.slow, name="slow"),
]
