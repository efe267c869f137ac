"""Settings for the txrouter example wiki: a deliberately leaner Django project.

Unlike the blog it has no admin, auth, sessions or messages, and it adds
``django.contrib.humanize``, so tests can tell the two projects apart.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "django-insecure-example-wiki-key-do-not-use-in-production",
)
DEBUG = os.environ.get("DJANGO_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
ALLOWED_HOSTS = ["localhost", ".localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.humanize",
    "django.contrib.staticfiles",
    "pages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "wiki.urls"
WSGI_APPLICATION = "wiki.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Relative URLs: Django prefixes them with SCRIPT_NAME, so the site works
# wherever txrouter mounts it.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = BASE_DIR / "media"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The wiki shares its host name with the blog (mounted at /), and a browser
# keeps one cookie per (host, path, name): with Django's default names
# (sessionid, csrftoken) the two projects would overwrite each other's
# cookies. Distinct names are the fix; a cookie path is not. A fixed
# SESSION_COOKIE_PATH / CSRF_COOKIE_PATH of "/wiki/" would be wrong, since
# routes.yaml also serves this project at / on wiki.localhost, where the
# browser would then never send the cookie back; and a path does not isolate
# anything between pages of one origin anyway. The wiki has no sessions
# today; the session cookie is named all the same, for the day it gets them.
SESSION_COOKIE_NAME = "wiki_sessionid"
CSRF_COOKIE_NAME = "wiki_csrftoken"

# Let /echo/ hash request bodies larger than Django's 2.5 MB default.
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024

# Send Django's log records (including unhandled view exceptions) to stderr,
# whatever the value of DEBUG.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}

SITE_TITLE = "txrouter example wiki"
WIKI_ONLY_SETTING = True
