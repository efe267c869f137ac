"""Seed a few example posts."""

from datetime import UTC, datetime

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

SEED_POSTS = [
    {
        "title": "Hello, txrouter",
        "slug": "hello-txrouter",
        "body": "This blog is a plain Django project served by txrouter.\n\n"
        "It has no idea which URL prefix it lives under.",
        "created": datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
    },
    {
        "title": "Static files under a prefix",
        "slug": "static-files-under-a-prefix",
        "body": "STATIC_URL is relative, so Django prefixes it with SCRIPT_NAME.",
        "created": datetime(2024, 1, 2, 12, 0, tzinfo=UTC),
    },
    {
        "title": "Two Django projects, one port",
        "slug": "two-django-projects-one-port",
        "body": "The wiki next door has its own settings and its own database.",
        "created": datetime(2024, 1, 3, 12, 0, tzinfo=UTC),
    },
]


def add_posts(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create the seed posts."""
    Post = apps.get_model("posts", "Post")
    for fields in SEED_POSTS:
        Post.objects.update_or_create(slug=fields["slug"], defaults=fields)


def remove_posts(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Delete the seed posts."""
    Post = apps.get_model("posts", "Post")
    Post.objects.filter(slug__in=[fields["slug"] for fields in SEED_POSTS]).delete()


class Migration(migrations.Migration):
    dependencies = (("posts", "0001_initial"),)

    operations = (migrations.RunPython(add_posts, remove_posts),)
