"""The shop's order view: one request, one transaction (ATOMIC_REQUESTS), the SMS sent only if it
commits. `how` picks the way the SMS goes; `fail` makes the view raise after the send was asked for, so
the transaction rolls back. The README's Django section shows these calls."""

from datetime import datetime, timezone

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from smsdispatch import outbox, schedule_reminder_on_commit, send_batch, send_sms

from .models import Order


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    order = Order.objects.create(number=request.POST["number"], phone=request.POST["phone"])
    text = f"Order {order.number} confirmed"
    key = f"order-{order.number}-confirmed"
    how = request.POST.get("how", "delay_on_commit")
    if how == "delay_on_commit":
        # recorded and published after the commit; nothing at all if the transaction rolls back
        sent = send_sms.delay_on_commit(order.phone, text, idempotency_key=key)
    elif how == "outbox":
        # a row in this transaction; published after the commit, or by beat's relay if this process dies
        sent = outbox.send_sms(order.phone, text, idempotency_key=key)
    elif how == "batch":
        sent = send_batch.delay_on_commit([{"to": order.phone, "text": text, "idempotency_key": key}],
                                          batch_id=f"order-{order.number}")
    elif how == "outbox_batch":
        sent = outbox.send_batch([{"to": order.phone, "text": text, "idempotency_key": key}],
                                 batch_id=f"order-{order.number}")
    elif how == "reminder":
        sent = schedule_reminder_on_commit(order.phone, text, datetime.now(timezone.utc), idempotency_key=key)
    else:
        return JsonResponse({"error": f"unknown how {how!r}"}, status=400)
    if request.POST.get("fail"):
        raise RuntimeError(f"order {order.number} failed after the SMS was asked for")
    return JsonResponse({"order": order.number, "sent": sent})
