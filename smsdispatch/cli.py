"""The `smsdispatch` command line. Settings come from the same SMSDISPATCH_* variables as the worker.

Exit codes: 0 success; 1 the thing asked about failed or does not exist (a message not accepted, a
batch with failures, an unknown id); 2 bad usage or configuration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from typing import Any

import redis

from .errors import SmsDispatchError
from .health import CHECKS, PING_TIMEOUT
from .logs import install as install_logging
from .phone import mask

OK_STATUSES = ("accepted", "delivered")
#: Where `smsdispatch metrics` listens by default.
METRICS_PORT = 9755


def main(argv: list[str] | None = None) -> int:
    _line_buffered()
    parser = argparse.ArgumentParser(prog="smsdispatch", description="Send SMS through the smsdispatch worker.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the whole pipeline locally: embedded Redis, worker, fake Eskiz")
    sub.add_parser("dev", help="embedded Redis + worker + beat + Flower for local development")
    p = sub.add_parser("send", help="send one SMS (or schedule it with --at)")
    p.add_argument("to")
    p.add_argument("text")
    p.add_argument("--gateway")
    p.add_argument("--key", help="idempotency key")
    p.add_argument("--at", help="ISO 8601 time with an offset: schedule a reminder instead")
    p.add_argument("--no-wait", action="store_true", help="print the ids and return without waiting")
    p = sub.add_parser("batch", help="send a CSV file (columns: to,text[,idempotency_key])")
    p.add_argument("file")
    p.add_argument("--gateway")
    p.add_argument("--batch-id")
    p.add_argument("--key", help="the batch's idempotency key (re-submitting sends only what was not accepted)")
    p.add_argument("--no-wait", action="store_true")
    sub.add_parser("status", help="a message's record and history").add_argument("message_id")
    sub.add_parser("batch-status", help="a batch's counts").add_argument("batch_id")
    sub.add_parser("balance", help="ask gateways for their balance now").add_argument("gateway", nargs="?")
    p = sub.add_parser("dead-letters", help="messages whose retries ran out")
    p.add_argument("--replay", action="store_true",
                   help="submit again each one that is provably unsent (a new submission); list the others")
    p.add_argument("--force", action="store_true",
                   help="with --replay: also those that may have been sent (a recipient may get it twice)")
    sub.add_parser("cancel", help="cancel a reminder").add_argument("reminder_id")
    p = sub.add_parser("webhooks", help="run the delivery-report receiver (POST /<gateway>/<secret>)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=8, help="threads that process reports (default 8)")
    p.add_argument("--connection-limit", type=int, default=1000,
                   help="open connections at most; more wait in the listen backlog (default 1000)")
    p.add_argument("--channel-timeout", type=float, default=10.0,
                   help="seconds a connection may stay silent before it is closed (default 10)")
    p = sub.add_parser("metrics", help="serve /metrics (Prometheus) and /healthz, or print the metrics once")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=METRICS_PORT, help=f"(default {METRICS_PORT})")
    p.add_argument("--once", action="store_true", help="print the metrics in Prometheus's text format and exit")
    p = sub.add_parser("health", help="check Redis, workers and beat; exit 0 if healthy, 1 if not")
    p.add_argument("checks", nargs="*", metavar="CHECK", help=f"any of {', '.join(CHECKS)} (default: all)")
    p.add_argument("--node", help="the worker that must answer the ping, e.g. celery@$HOSTNAME (default: any)")
    p.add_argument("--timeout", type=float, default=PING_TIMEOUT,
                   help=f"seconds a worker has to answer (default {PING_TIMEOUT:g})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # numbers and credentials masked in every line we print; JSON lines with SMSDISPATCH_LOG_FORMAT=json
    install_logging(logging.getLogger(), _log_format())
    try:
        if args.command in ("demo", "dev"):
            from .devtools import demo, stack
            return (demo if args.command == "demo" else stack).run()
        return COMMANDS[args.command](args)
    except SmsDispatchError as e:
        print(f"smsdispatch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _line_buffered() -> None:
    """Progress lines reach a pipe at once (`smsdispatch dev | tee dev.log`, a test reading them):
    Python block-buffers a piped stdout unless PYTHONUNBUFFERED is set, which a user's shell is not."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)     # absent on a replaced stream (pytest's capture)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def _runtime():
    from .worker import app
    return app.runtime


def _log_format() -> str:
    """SMSDISPATCH_LOG_FORMAT; text when the settings cannot be read (the command then says why)."""
    from .config import load_settings
    try:
        return load_settings().log_format
    except SmsDispatchError:
        return "text"


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _send(args) -> int:
    rt = _runtime()
    kwargs = {k: v for k, v in {"to": args.to, "text": args.text, "gateway": args.gateway,
                                "idempotency_key": args.key}.items() if v is not None}
    if args.at:
        reminder_id = rt.schedule_reminder(kwargs, args.at)
        _print({"reminder_id": reminder_id, **(rt.reminders.get(reminder_id) or {})})
        return 0
    handle = rt.app.tasks["smsdispatch.send_sms"].delay(**kwargs)
    if args.no_wait:
        _print({"task_id": handle.id})
        return 0
    result = handle.get(timeout=rt.settings.visibility_timeout)
    _print(result)
    return 0 if result["status"] in OK_STATUSES else 1


def _batch(args) -> int:
    rt = _runtime()
    with open(args.file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"to", "text"} <= set(rows[0]):
        print(f"smsdispatch: {args.file} needs a header with at least the columns to,text", file=sys.stderr)
        return 2
    messages = [{k: v for k, v in row.items() if k in ("to", "text", "idempotency_key") and v} for row in rows]
    _progress("stored", 0, len(messages))
    summary = rt.app.tasks["smsdispatch.send_batch"].delay(
        messages, gateway=args.gateway, batch_id=args.batch_id, idempotency_key=args.key).get(timeout=300)
    _progress("stored", len(messages), len(messages), done=True)
    if args.no_wait:
        _print({k: summary[k] for k in ("batch_id", "total", "chunks")})
        return 0
    batch = rt.batches.get(summary["batch_id"])
    while batch["status"] != "done":       # a progress bar reads the batch counts; nothing to await
        _progress("sent", batch["total"] - batch["pending"], batch["total"])
        time.sleep(0.5)
        batch = rt.batches.get(summary["batch_id"])
    _progress("sent", batch["total"], batch["total"], done=True)
    _print(batch)
    return 0 if batch["failed"] == batch["unknown"] == 0 else 1


def _progress(what: str, done_count: int, total: int, *, done: bool = False) -> None:
    width = 30
    filled = int(width * done_count / total) if total else width
    sys.stderr.write(f"\r{what:>6} [{'#' * filled}{'.' * (width - filled)}] {done_count:,}/{total:,}")
    if done:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _status(args) -> int:
    rt = _runtime()
    record = rt.dispatcher.records.get(args.message_id)
    if record is None:
        print(f"smsdispatch: no record of message {args.message_id}", file=sys.stderr)
        return 1
    record.pop("payload", None)          # the raw kwargs again, unmasked
    if record.get("to"):
        record["to"] = mask(record["to"])
    _print({"record": record, "history": rt.dispatcher.records.history(args.message_id)})
    return 0


def _batch_status(args) -> int:
    batch = _runtime().batches.get(args.batch_id)
    if batch is None:
        print(f"smsdispatch: no batch {args.batch_id}", file=sys.stderr)
        return 1
    _print(batch)
    return 0


def _balance(args) -> int:
    rt = _runtime()
    names = [args.gateway] if args.gateway else rt.settings.configured_gateways()
    out: dict[str, Any] = {}
    failed = False
    for name in names:
        gateway = rt.dispatcher.gateways.get(name)
        if not gateway.supports_balance:
            out[name] = "no balance API"
            continue
        try:
            b = gateway.balance()
            out[name] = "unlimited" if b.unlimited else {"amount": b.amount, "currency": b.currency}
        except SmsDispatchError as e:
            out[name], failed = {"error": str(e)}, True
    _print(out)
    return 1 if failed else 0


def _dead_letters(args) -> int:
    """List the dead letters; with --replay submit again the provably unsent ones. A message that may
    have reached a gateway (`maybe_sent`: a 500 or a lost answer where the gateway could not be asked,
    a worker that died mid-call) is listed with the reason and left alone unless --force says the
    operator accepts a possible duplicate (deadletters.py decides, for the status page too)."""
    if args.force and not args.replay:
        print("smsdispatch: --force goes with --replay", file=sys.stderr)
        return 2
    from .deadletters import DeadLetters

    dead = DeadLetters.of(_runtime())
    listing = dead.listing()
    for item in listing:
        item.pop("updated_at")
        if args.replay:
            done = dead.replay(item["message_id"], force=args.force)
            item["replayed"] = done.replayed
            if not done.replayed:
                item["reason"] = done.reason
    _print(listing)
    return 0


def _cancel(args) -> int:
    cancelled = _runtime().reminders.cancel(args.reminder_id)
    _print({"reminder_id": args.reminder_id, "cancelled": cancelled})
    return 0 if cancelled else 1


def _webhooks(args) -> int:
    from .webhooks import make_app, serve

    if min(args.threads, args.connection_limit) < 1 or args.channel_timeout <= 0:
        print("smsdispatch: --threads and --connection-limit must be at least 1, --channel-timeout above 0",
              file=sys.stderr)
        return 2
    rt = _runtime()
    hooks = bool(rt.settings.webhook_secret or rt.settings.webhook_secrets)
    if not hooks and not rt.settings.status_page:
        print("smsdispatch: set SMSDISPATCH_WEBHOOK_SECRET or SMSDISPATCH_WEBHOOK_SECRETS "
              "(and SMSDISPATCH_WEBHOOK_BASE_URL), or SMSDISPATCH_STATUS_USER and SMSDISPATCH_STATUS_PASSWORD "
              "for the status page alone", file=sys.stderr)
        return 2

    def listening(port: int) -> None:
        served = [f"http://{args.host}:{port}/<gateway>/<secret>"] if hooks else []
        if rt.settings.status_page:
            served.append(f"the status page on http://{args.host}:{port}/status/")
        print(f"smsdispatch webhooks listening on {', '.join(served)}", flush=True)
    serve(make_app(rt.settings), args.host, args.port, threads=args.threads, connection_limit=args.connection_limit,
          channel_timeout=args.channel_timeout, on_listening=listening)
    return 0


def _metrics(args) -> int:
    from .metrics import Metrics
    from .pages import Pages, pages
    from .webhooks import serve

    routes = pages(_runtime())
    if args.once:
        metrics = routes["/metrics"]
        assert isinstance(metrics, Metrics)
        try:
            sys.stdout.buffer.write(metrics.exposition())
        except ImportError:
            print("smsdispatch: metrics need prometheus_client: pip install 'smsdispatch[metrics]'", file=sys.stderr)
            return 2
        except redis.RedisError as e:
            print(f"smsdispatch: Redis cannot be read: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        return 0

    def listening(port: int) -> None:
        print(f"smsdispatch metrics listening on http://{args.host}:{port}/metrics (and /healthz)", flush=True)
    serve(Pages(routes), args.host, args.port, threads=4, on_listening=listening)
    return 0


def _health(args) -> int:
    from .health import Health
    from .pages import pages

    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        print(f"smsdispatch: unknown check {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    health = pages(_runtime())["/healthz"]
    assert isinstance(health, Health)
    healthy, answer = health.run(dict.fromkeys(args.checks or CHECKS), node=args.node, timeout=args.timeout)
    _print(answer)
    return 0 if healthy else 1


COMMANDS = {"send": _send, "webhooks": _webhooks, "batch": _batch, "status": _status, "batch-status": _batch_status,
            "balance": _balance, "dead-letters": _dead_letters, "cancel": _cancel, "metrics": _metrics,
            "health": _health}


if __name__ == "__main__":
    sys.exit(main())
