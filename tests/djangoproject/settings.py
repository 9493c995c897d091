"""The test project's settings. The database and smsdispatch's settings come from the environment the
tests set (tests/django_integration/conftest.py), so the test process, the worker, beat and the web
process it kills all use the same database and the same Redis."""

import json
import os

SECRET_KEY = "test-project-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "smsdispatch.contrib.django",
    "tests.djangoproject.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.djangoproject.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages"]},
}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("TESTPROJECT_DB_NAME", "smsdispatch_testproject"),
        "HOST": os.environ.get("TESTPROJECT_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("TESTPROJECT_DB_PORT", "5432"),
        "USER": os.environ.get("TESTPROJECT_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("TESTPROJECT_DB_PASSWORD", ""),
        # Every request is one transaction: a view that raises rolls back its order and its SMS.
        "ATOMIC_REQUESTS": True,
    }
}

# smsdispatch's settings, as a project would write them (names as SMSDISPATCH_* without the prefix).
# Here the tests hand them over as JSON; without it, smsdispatch reads the environment alone.
if os.environ.get("TESTPROJECT_SMSDISPATCH"):
    SMSDISPATCH = json.loads(os.environ["TESTPROJECT_SMSDISPATCH"])
