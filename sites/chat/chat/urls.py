"""URL configuration for the example chat: its pages (the sockets are in
``room.routing``)."""

from django.urls import path
from room import views

urlpatterns = [
    path("", views.index, name="index"),
    path("whoami/", views.whoami, name="whoami"),
    path("<slug:room>/", views.room, name="room"),
]
