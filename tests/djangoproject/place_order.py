"""A web process that places one order through the outbox and can be killed right after the commit:

    python -m tests.djangoproject.place_order NUMBER PHONE [--hang-after-commit]

With --hang-after-commit, the first thing to run after the commit (before the outbox's own publish,
registered later) prints "committed <message id>" and waits forever: the test kills the process -9
there, between the commit and the publish."""

import argparse
import sys
import threading

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("number")
    parser.add_argument("phone")
    parser.add_argument("--hang-after-commit", action="store_true")
    args = parser.parse_args()
    django.setup()
    from django.db import transaction

    from smsdispatch import outbox
    from tests.djangoproject.shop.models import Order

    sent: list[str] = []

    def hang() -> None:
        print(f"committed {sent[0]}", flush=True)
        threading.Event().wait()

    with transaction.atomic():
        order = Order.objects.create(number=args.number, phone=args.phone)
        if args.hang_after_commit:
            transaction.on_commit(hang)
        sent.append(outbox.send_sms(order.phone, f"Order {order.number} confirmed",
                                    idempotency_key=f"order-{order.number}-confirmed"))
    print(f"published {sent[0]}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
