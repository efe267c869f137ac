"""The chat's sockets. Channels' URLRouter matches the path after the ASGI
root_path (the route prefix), as Django's URL resolver does, so these
patterns work wherever txrouter mounts the project."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/echo/", consumers.EchoConsumer.as_asgi()),
    path("ws/<slug:room>/", consumers.RoomConsumer.as_asgi()),
]
