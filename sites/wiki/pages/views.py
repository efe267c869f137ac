"""Wiki page index and page views."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from pages.models import Page


def page_list(request: HttpRequest) -> HttpResponse:
    """List every page alphabetically."""
    return render(
        request,
        "pages/page_list.html",
        {"site_title": settings.SITE_TITLE, "pages": Page.objects.all()},
    )


def page_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """Show one page."""
    page = get_object_or_404(Page, slug=slug)
    return render(
        request,
        "pages/page_detail.html",
        {"site_title": settings.SITE_TITLE, "page": page},
    )
