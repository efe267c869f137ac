"""The chat's pages."""

import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import get_script_prefix

ROOMS = ["lobby", "twisted", "django"]


def index(request: HttpRequest) -> HttpResponse:
    """The list of rooms."""
    return render(
        request, "room/index.html", {"rooms": ROOMS, "site_title": settings.SITE_TITLE}
    )


def room(request: HttpRequest, room: str) -> HttpResponse:
    """A chat room's page; its script opens the room's socket."""
    context = {
        "room": room,
        "site_title": settings.SITE_TITLE,
        # The socket's path under the prefix the project is mounted at.
        "socket_path": f"{get_script_prefix()}ws/{room}/",
    }
    return render(request, "room/room.html", context)


def whoami(request: HttpRequest) -> JsonResponse:
    """What the project sees of a request, for the tests."""
    seen = {
        "project": "chat",
        "pid": os.getpid(),
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "path": request.path,
        "path_info": request.path_info,
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "host": request.get_host(),
        "scheme": request.scheme,
    }
    return JsonResponse(seen)
