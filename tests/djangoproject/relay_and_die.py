"""A relay that dies (SIGKILL, by its own hand) right after publishing an outbox row, before its
transaction commits the row's published_at:

    python -m tests.djangoproject.relay_and_die ROW_ID
"""

import os
import signal
import sys

import django


def main() -> None:
    django.setup()
    from smsdispatch.contrib.django import outbox

    real_publish = outbox.publish

    def publish_then_die(app, row):
        real_publish(app, row)
        print(f"published {row.id}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    outbox.publish = publish_then_die
    outbox.relay(ids=[int(sys.argv[1])])


if __name__ == "__main__":
    main()
