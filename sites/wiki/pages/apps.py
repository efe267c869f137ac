"""App configuration for wiki pages."""

from django.apps import AppConfig


class PagesConfig(AppConfig):
    """Wiki pages stored in SQLite."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "pages"
