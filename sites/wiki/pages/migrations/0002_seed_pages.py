"""Seed a few example wiki pages."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

SEED_PAGES = [
    {
        "title": "Main Page",
        "slug": "main-page",
        "text": "Welcome to the txrouter example wiki.\n\n"
        "It shares a port with the blog but nothing else.",
    },
    {
        "title": "Routing",
        "slug": "routing",
        "text": "txrouter reads routes.yaml and mounts each app under a URL prefix.",
    },
    {
        "title": "Sandbox",
        "slug": "sandbox",
        "text": "Feel free to experiment here.",
    },
]


def add_pages(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create the seed pages."""
    Page = apps.get_model("pages", "Page")
    for fields in SEED_PAGES:
        Page.objects.update_or_create(slug=fields["slug"], defaults=fields)


def remove_pages(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Delete the seed pages."""
    Page = apps.get_model("pages", "Page")
    Page.objects.filter(slug__in=[fields["slug"] for fields in SEED_PAGES]).delete()


class Migration(migrations.Migration):
    dependencies = (("pages", "0001_initial"),)

    operations = (migrations.RunPython(add_pages, remove_pages),)
