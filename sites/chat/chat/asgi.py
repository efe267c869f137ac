"""ASGI entry point for the example chat: ``application`` serves the pages
(Django's views) and the chat rooms (WebSockets) alike."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat.settings")

# Django is set up first: the consumers import its settings.
pages = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from room.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": pages,
        # Only pages of this site may open its sockets (the Origin header
        # must name one of ALLOWED_HOSTS).
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
