"""smsdispatch in a Django project (``pip install 'smsdispatch[django]'``).

    INSTALLED_APPS = [..., "smsdispatch.contrib.django"]
    SMSDISPATCH = {"REDIS_URL": "redis://redis:6379/0", "DEFAULT_GATEWAY": "eskiz", ...}   # optional

- apps.py        the AppConfig: `ready()` hands SMSDISPATCH to smsdispatch.configure (no SMSDISPATCH:
                 the environment alone) and installs the outbox relay on the app
- commit.py      on_commit: what `send_sms.delay_on_commit` & co. defer to, with a clear error without Django
- models.py      OutboxMessage, the transactional outbox table (migrations/)
- outbox.py      send_sms / send_batch into the outbox, in the caller's transaction; relay() publishes
- tasks.py       RelayOutbox, beat's task that runs relay() on the periodic queue
- worker.py      ``celery -A smsdispatch.contrib.django.worker worker|beat`` with the project loaded
- admin.py       outbox rows and their message records, numbers masked

Nothing here is imported by `import smsdispatch`; this package's own __init__ imports no Django.
"""
