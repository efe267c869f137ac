"""App configuration for blog posts."""

from django.apps import AppConfig


class PostsConfig(AppConfig):
    """Blog posts stored in SQLite."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "posts"
