"""Diagnostic and benchmark views used by txrouter's tests."""

import hashlib
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

PROJECT = "wiki"
# Exactly 100 bytes: "hello from wiki", padded with dots, newline-terminated.
HELLO_BODY = f"hello from {PROJECT}".encode().ljust(99, b".") + b"\n"
MAX_SLEEP = 30.0


def _clamp_seconds(seconds: float) -> float:
    """Keep a requested sleep within ``[0, MAX_SLEEP]`` (NaN counts as 0)."""
    return min(seconds, MAX_SLEEP) if seconds > 0 else 0.0


def hello(request: HttpRequest) -> HttpResponse:
    """Return exactly 100 bytes of plain text."""
    return HttpResponse(HELLO_BODY, content_type="text/plain")


def whoami(request: HttpRequest) -> JsonResponse:
    """Describe the request as Django saw it, plus a few settings."""
    return JsonResponse(
        {
            "project": PROJECT,
            "script_name": request.META["SCRIPT_NAME"],
            "path_info": request.META["PATH_INFO"],
            "path": request.path,
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "host": request.get_host(),
            "scheme": request.scheme,
            "reverse_hello": reverse("hello"),
            "static_url": static("pages/wiki.css"),
            "site_title": settings.SITE_TITLE,
            "installed_apps": list(settings.INSTALLED_APPS),
            "pid": os.getpid(),
            "db_name": str(settings.DATABASES["default"]["NAME"]),
        }
    )


def cookies(request: HttpRequest) -> JsonResponse:
    """Set this project's CSRF cookie, as a page with a form does, and name it."""
    get_token(request)
    return JsonResponse(
        {
            "project": PROJECT,
            "session_cookie": settings.SESSION_COOKIE_NAME,
            "csrf_cookie": settings.CSRF_COOKIE_NAME,
        }
    )


@csrf_exempt
@require_POST
def echo(request: HttpRequest) -> JsonResponse:
    """Report the length and SHA-256 of the request body."""
    body = request.body
    return JsonResponse(
        {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": request.META.get("CONTENT_TYPE", ""),
        }
    )


def stream(request: HttpRequest) -> HttpResponse:
    """Stream ``n`` lines ("chunk i"), sleeping ``delay`` seconds between them."""
    try:
        count = int(request.GET.get("n", "5"))
        delay = _clamp_seconds(float(request.GET.get("delay", "0")))
    except ValueError:
        return HttpResponseBadRequest("n must be an int, delay a float\n")

    def chunks() -> Iterator[str]:
        for i in range(count):
            if i:
                time.sleep(delay)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def boom(request: HttpRequest) -> HttpResponse:
    """Fail on purpose with a 500."""
    raise RuntimeError("boom")


def slow(request: HttpRequest) -> HttpResponse:
    """Sleep ``s`` seconds (default 1, at most 30), then answer."""
    try:
        seconds = float(request.GET.get("s", "1"))
    except ValueError:
        return HttpResponseBadRequest("s must be a float\n")
    time.sleep(_clamp_seconds(seconds))
    return HttpResponse("slept", content_type="text/plain")
