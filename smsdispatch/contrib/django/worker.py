"""The worker and beat of a Django project, with the project loaded:

    DJANGO_SETTINGS_MODULE=mysite.settings celery -A smsdispatch.contrib.django.worker worker --pool threads
    DJANGO_SETTINGS_MODULE=mysite.settings celery -A smsdispatch.contrib.django.worker beat

Importing this module sets Django up (as a project's wsgi.py does): the AppConfig (apps.py) hands the
project's SMSDISPATCH to smsdispatch.configure and installs the outbox relay, so `app` is the same app
the web process sends with, beat's schedule includes the relay, and the worker can read the outbox.
Celery's own Django fix-up (installed because DJANGO_SETTINGS_MODULE is set) closes the database
connections around each task.
"""

from __future__ import annotations

import os

import django
from django.apps import apps

from ...errors import ConfigError
from ...worker import default_app

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise ConfigError("smsdispatch.contrib.django.worker loads a Django project: set DJANGO_SETTINGS_MODULE "
                      "(e.g. mysite.settings), or start the plain worker with -A smsdispatch.worker")
django.setup()
if not apps.is_installed("smsdispatch.contrib.django"):
    raise ConfigError('smsdispatch.contrib.django.worker: add "smsdispatch.contrib.django" to INSTALLED_APPS '
                      f"of {os.environ['DJANGO_SETTINGS_MODULE']}")

#: ``celery -A smsdispatch.contrib.django.worker`` finds it here.
app = default_app()
