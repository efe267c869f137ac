"""Admin registration for blog posts."""

from typing import ClassVar

from django.contrib import admin

from posts.models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    """List, search and edit posts."""

    list_display = ("title", "slug", "created")
    search_fields = ("title", "body")
    prepopulated_fields: ClassVar[dict[str, tuple[str, ...]]] = {"slug": ("title",)}
