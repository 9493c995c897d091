"""A small Django project for the tests of smsdispatch.contrib.django (tests/django_integration): a shop
whose order views send SMS with `delay_on_commit`, the outbox, batches and reminders, on PostgreSQL."""
