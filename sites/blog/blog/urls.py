"""URL configuration for the example blog."""

from django.contrib import admin
from django.urls import path
from posts import views as post_views

from . import views

urlpatterns = [
    path("", post_views.post_list, name="post_list"),
    path("posts/<slug:slug>/", post_views.post_detail, name="post_detail"),
    path("hello/", views.hello, name="hello"),
    path("whoami/", views.whoami, name="whoami"),
    path("cookies/", views.cookies, name="cookies"),
    path("echo/", views.echo, name="echo"),
    path("stream/", views.stream, name="stream"),
    path("boom/", views.boom, name="boom"),
    path("slow/", views.slow, name="slow"),
    path("admin/", admin.site.urls),
]
