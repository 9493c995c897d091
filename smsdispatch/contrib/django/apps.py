"""The Django app: ``INSTALLED_APPS = [..., "smsdispatch.contrib.django"]``.

`ready()` runs in every process that loads the project (the web server, manage.py, the worker and beat
started from smsdispatch.contrib.django.worker): it hands the project's ``SMSDISPATCH`` setting to
`smsdispatch.configure` (absent: the environment alone, as without Django) and installs the outbox relay
on the app it gets (tasks.py `install`). Nothing connects here.
"""

from __future__ import annotations

from django.apps import AppConfig


class SmsDispatchConfig(AppConfig):
    name = "smsdispatch.contrib.django"
    label = "smsdispatch"          # tables smsdispatch_*; "django", the package's last name, would mislead
    verbose_name = "SMS dispatch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from ...worker import configure
        from .tasks import install
        install(configure(getattr(settings, "SMSDISPATCH", None)))
