"""Post list and detail pages."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from posts.models import Post


def post_list(request: HttpRequest) -> HttpResponse:
    """Show every post, newest first."""
    return render(
        request,
        "posts/post_list.html",
        {"site_title": settings.SITE_TITLE, "posts": Post.objects.all()},
    )


def post_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """Show one post."""
    post = get_object_or_404(Post, slug=slug)
    return render(
        request,
        "posts/post_detail.html",
        {"site_title": settings.SITE_TITLE, "post": post},
    )
