"""The status page's pages: each reads what it shows and renders it (templates/<page>.html).

Everything shown passes through `shown` (redact.py: numbers and secrets masked wherever they appear,
in a text, a metadata value, a gateway's error) and, in the template, `html.escape`. A record's number
is shown with `phone.mask`; its `payload` (the producer's arguments, the number in full) never.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from ..batch import Batches
from ..circuit import Circuits
from ..config import Settings
from ..deadletters import DeadLetters, refusal
from ..phone import mask
from ..polling import Poller
from ..records import MessageStatus, Records
from ..redact import redact
from ..redisclient import text
from .html import Html, join, render
from .lookup import Lookup

BATCH_PAGE = 50             # entries of a batch per page
DEAD_LETTERS_SHOWN = 200    # the newest dead letters listed
BATCHES_SHOWN = 50
BAR_WIDTH = 1000            # the progress bar's SVG units
_STATUSES = {s.value for s in MessageStatus} | {"queued", "running", "done"}
#: A record's fields as the message page lists them, in this order; `payload` never.
FIELDS = (("message_id", "Message id"), ("status", "Status"), ("to", "Number"), ("gateway", "Gateway"),
          ("requested_gateway", "Requested gateway"), ("gateway_message_id", "Gateway's id"),
          ("idempotency_key", "Idempotency key"), ("batch_id", "Batch"), ("task_id", "Task id"),
          ("sender", "Sender"), ("segments", "Segments"), ("attempts", "Attempts"), ("lookups", "Lookups"),
          ("maybe_sent", "May have been sent"), ("raw_status", "Gateway's status"),
          ("created_at", "Created"), ("updated_at", "Updated"), ("accepted_at", "Accepted"),
          ("error", "Error"))


@dataclass
class Page:
    title: str
    body: Html
    section: str = ""           # which item of the navigation is lit
    status: str = "200 OK"


def shown(value: Any) -> str:
    """A value as a person may see it: numbers and secrets masked (redact.py)."""
    if value is None or value == "":
        return "—"
    return redact(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def status_class(status: Any) -> str:
    return f"s-{status}" if status in _STATUSES else "s-other"


def number_of(record: dict[str, Any]) -> str:
    payload = record.get("payload")
    number = record.get("to") or (payload.get("to") if isinstance(payload, dict) else None)
    return mask(number) if number else "—"


def amount(value: float) -> str:
    """1e12 → "1,000,000,000,000"; 12.5 → "12.50"."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def error_text(error: Any) -> str:
    if isinstance(error, dict):
        return shown(f"{error.get('code')}: {error.get('message')}")
    return shown(error) if error else ""


class Views:
    def __init__(self, settings: Settings, records: Records, batches: Batches, circuits: Circuits, poller: Poller,
                 dead_letters: DeadLetters, *, clock: Callable[[], float]) -> None:
        self.settings, self.records, self.batches = settings, records, batches
        self.circuits, self.poller, self.dead = circuits, poller, dead_letters
        self.lookup = Lookup(records, batches)
        self.clock = clock

    # --- links --------------------------------------------------------------------------------

    @staticmethod
    def url(root: str, path: str, **params: Any) -> str:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{root}{path}" + (f"?{query}" if query else "")

    def message_link(self, root: str, message_id: str) -> Html:
        return render("parts", "link", href=self.url(root, "/message", id=message_id), text=shown(message_id))

    # --- pages --------------------------------------------------------------------------------

    def search(self, root: str, q: str) -> Page:
        counts = self.lookup.counts()
        results = Html("")
        if q.strip():
            found = self.lookup.search(q)
            rows = [self.message_row(root, r) for r in found.messages]
            batches = [self.batch_row(root, b) for b in found.batches]
            if not rows and not batches:
                results = render("search", "nothing", q=shown(q),
                                 hint="fewer than 4 digits: no search by number" if q.strip().isdigit() else "")
            else:
                results = render("search", "results", messages=render("parts", "messages", rows=join(rows))
                                 if rows else "", batches=render("parts", "batches", rows=join(batches)) if batches
                                 else "", note="Newest first; at most 50 by number." if found.by_number else "")
        echo = shown(q) if q else ""        # a whole number typed in is not shown back whole
        return Page("Search", render("search", root=root, q=echo if echo == q else "", results=results,
                                     dead_link=self.url(root, "/dead"), **counts), "search")

    def message_row(self, root: str, r: dict[str, Any]) -> Html:
        return render("parts", "message_row", link=self.message_link(root, r["message_id"]), number=number_of(r),
                      status=r.get("status") or "—", status_class=status_class(r.get("status")),
                      gateway=shown(r.get("gateway")), updated=when(r.get("updated_at")),
                      error=error_text(r.get("error")))

    def message(self, root: str, message_id: str, *, actions: bool) -> Page:
        record = self.lookup.message(message_id) if message_id else None
        if record is None:
            return self.not_found(f"No record of message {shown(message_id)} (it may have expired).")
        fields = []
        for name, label in FIELDS:
            value = record.get(name)
            if name == "to":
                value = number_of(record)
            elif name.endswith("_at"):
                value = when(value) if value else None
            elif name == "error":
                value = error_text(value) or None
            elif name == "maybe_sent":
                value = "yes" if value else "no"
            if value in (None, ""):
                continue
            if name == "batch_id":
                shown_value: Any = render("parts", "link", href=self.url(root, "/batch", id=value), text=shown(value))
            else:
                shown_value = shown(value)
            fields.append(render("message", "field", name=label, value=shown_value))
        history = [render("message", "event", at=when(h.get("at")), status=h.get("status") or "—",
                          status_class=status_class(h.get("status")), note=shown(h["note"]) if h.get("note") else "",
                          error=error_text(h.get("error")))
                   for h in self.records.history(record["message_id"])]
        dead = Html("")
        if self.lookup.is_dead_letter(record["message_id"]):
            dead = render("message", "dead", replay=render("parts", "replay_link", href=self.url(
                root, "/replay", id=record["message_id"])) if actions else "")
        text = render("message", "text", text=shown(record.get("text"))) if record.get("text") else ""
        metadata = render("message", "metadata", metadata=redact(json.dumps(
            record["metadata"], ensure_ascii=False, indent=2))) if record.get("metadata") else ""
        return Page(f"Message {shown(record['message_id'])}", render(
            "message", status=record.get("status") or "—", status_class=status_class(record.get("status")),
            dead=dead, fields=join(fields), text=text, metadata=metadata, history=join(history)), "search")

    def bar(self, b: dict[str, Any]) -> Html:
        total = max(b["total"], 0)
        done = total - b["pending"]
        x, rects = 0, []
        for part in ("accepted", "failed", "unknown"):
            w = round(BAR_WIDTH * b[part] / total) if total else 0
            rects.append(render("parts", "bar_rect", kind=part, x=x, width=w))
            x += w
        percent = math.floor(100 * done / total) if total else 100
        return render("parts", "bar", total=total, done=done, percent=percent, rects=join(rects),
                      label=f"{done} of {total} done", accepted=b["accepted"], failed=b["failed"],
                      unknown=b["unknown"], pending=b["pending"])

    def batch_row(self, root: str, b: dict[str, Any]) -> Html:
        return render("parts", "batch_row", link=render("parts", "link", href=self.url(root, "/batch", id=b["batch_id"]),
                                                        text=shown(b["batch_id"])),
                      status=b.get("status") or "—", status_class=status_class(b.get("status")),
                      created=when(b.get("created_at")), bar=self.bar(b))

    def batches_page(self, root: str) -> Page:
        rows = [self.batch_row(root, b) for b in self.batches.recent(BATCHES_SHOWN)]
        body = render("parts", "batches", rows=join(rows)) if rows else render("parts", "empty", text="No batches.")
        return Page("Batches", render("batches", table=body, shown=BATCHES_SHOWN), "batches")

    def batch(self, root: str, batch_id: str, page: int) -> Page:
        b = self.lookup._read(lambda: self.batches.get(batch_id)) if batch_id else None
        if b is None:
            return self.not_found(f"No batch {shown(batch_id)} (it may have expired).")
        pages = max(1, math.ceil(b["total"] / BATCH_PAGE))
        page = min(max(page, 1), pages)
        entries = self.batches.entries(batch_id, (page - 1) * BATCH_PAGE, BATCH_PAGE)
        pipe = self.records.redis.pipeline(transaction=False)
        for _, message_id, _ in entries:
            pipe.hmget(self.records.keys.message(message_id), "status", "to", "error", "updated_at")
        rows = []
        for (index, message_id, entry), (status, to, error, updated) in zip(
                entries, pipe.execute() if entries else [], strict=True):
            status = text(status) if status else "queued"
            number = text(to) if to else (entry.get("to") if isinstance(entry, dict) else None)
            rows.append(render("batch", "row", index=index, link=self.message_link(root, message_id),
                               number=mask(number) if isinstance(number, str) and number else "—", status=status,
                               status_class=status_class(status),
                               error=error_text(json.loads(error)) if error else "",
                               updated=when(text(updated)) if updated else "—"))
        pager = join([
            render("parts", "link", href=self.url(root, "/batch", id=batch_id, page=page - 1), text="← newer")
            if page > 1 else "",
            f" page {page} of {pages} ",
            render("parts", "link", href=self.url(root, "/batch", id=batch_id, page=page + 1), text="older →")
            if page < pages else ""]) if pages > 1 else Html("")
        return Page(f"Batch {shown(batch_id)}", render(
            "batch", bar=self.bar(b), status=b.get("status") or "—", status_class=status_class(b.get("status")),
            gateway=shown(b.get("gateway")), created=when(b.get("created_at")), finished=when(b.get("finished_at")),
            rows=join(rows), pager=pager, first=(page - 1) * BATCH_PAGE + 1 if b["total"] else 0,
            last=min(page * BATCH_PAGE, b["total"]), total=b["total"]), "batches")

    def gateways(self, root: str) -> Page:
        now = self.clock()
        balances = self.poller.balances()
        rows = []
        for name in self.settings.configured_gateways():
            c = self.circuits.snapshot(name, now=now)
            bal = balances.get(name)
            threshold = self.settings.balance_thresholds.get(name)
            low = bal is not None and threshold is not None and bal["amount"] < threshold
            rows.append(render(
                "gateways", "row", name=name,
                balance=f"{amount(bal['amount'])} {bal['currency'] or ''}".strip() if bal else "not polled",
                balance_at=when(bal["at"]) if bal else "", balance_class="low" if low else "",
                threshold=amount(threshold) if threshold is not None else "—",
                state=c.state, state_class=f"c-{c.state}",
                detail=(f"{c.failures} of {c.calls} calls failed in the last {self.settings.circuit_window:g}s"
                        if c.state == "closed" else
                        f"open until {when(c.open_until)}" if c.state == "open" else
                        f"probing: {c.probes_ok} of {self.settings.circuit_probes} probes succeeded")))
        alerts = [render("gateways", "alert", at=when(a.get("at")), text=shown(
            f"{a.get('gateway')}: balance {a.get('amount')} {a.get('currency') or ''} below {a.get('threshold')}"))
            for a in reversed(self.poller.alerts()[-10:])]
        return Page("Gateways", render("gateways", rows=join(rows), alerts=render(
            "gateways", "alerts", items=join(alerts)) if alerts else ""), "gateways")

    def dead_letters(self, root: str, *, actions: bool) -> Page:
        total = self.dead.count()
        rows = []
        for d in reversed(self.dead.listing(limit=DEAD_LETTERS_SHOWN)):
            replay = (render("parts", "replay_link", href=self.url(root, "/replay", id=d["message_id"]))
                      if actions else "")
            rows.append(render("dead", "row", link=self.message_link(root, d["message_id"]), number=d["to"] or "—",
                               error=error_text(d["error"]), maybe="yes" if d["maybe_sent"] else "no",
                               maybe_class="warn" if d["maybe_sent"] else "", updated=when(d["updated_at"]),
                               status=d["status"] or "—", replay=replay))
        table = render("dead", "table", rows=join(rows)) if rows else render("parts", "empty", text="No dead letters.")
        note = ("Messages whose retries ran out, newest first" + (
            f": the newest {DEAD_LETTERS_SHOWN:,} of {total:,}." if total > DEAD_LETTERS_SHOWN else f" ({total:,}).")
            if total else "")
        return Page("Dead letters", render("dead", table=table, note=note), "dead")

    # --- the replay action ----------------------------------------------------------------------

    def replay_form(self, root: str, message_id: str, token: str) -> Page:
        record = self.lookup.message(message_id) if message_id else None
        if record is None:
            return self.not_found(f"No record of message {shown(message_id)} (it may have expired).")
        summary = self.summary(root, record)
        if not self.lookup.is_dead_letter(message_id):
            return Page("Replay", render("replay", "refused", summary=summary,
                                         reason="This message is not (or no longer) among the dead letters."), "dead",
                        "409 Conflict")
        why = refusal(record, force=True)
        if why:
            return Page("Replay", render("replay", "refused", summary=summary, reason=why), "dead", "409 Conflict")
        part = "confirm_maybe_sent" if record.get("maybe_sent") else "confirm"
        return Page("Replay this message?", render("replay", part, summary=summary, action=self.url(root, "/replay"),
                                                   id=message_id, token=token), "dead")

    def replay(self, root: str, message_id: str, *, force: bool) -> Page:
        record = self.lookup.message(message_id) if message_id else None
        if record is None:
            return self.not_found(f"No record of message {shown(message_id)}.")
        done = self.dead.replay(message_id, force=force)
        summary = self.summary(root, record)
        if not done.replayed:
            return Page("Not replayed", render("replay", "refused", summary=summary, reason=done.reason), "dead",
                        "409 Conflict")
        return Page("Replayed", render("replay", "done", summary=summary,
                                       link=self.message_link(root, done.message_id or message_id)), "dead")

    def summary(self, root: str, record: dict[str, Any]) -> Html:
        return render("replay", "summary", link=self.message_link(root, record["message_id"]),
                      number=number_of(record), status=record.get("status") or "—",
                      status_class=status_class(record.get("status")), error=error_text(record.get("error")),
                      text=shown(record.get("text")))

    @staticmethod
    def not_found(message: str) -> Page:
        return Page("Not found", render("parts", "message", text=message), status="404 Not Found")

    @staticmethod
    def refused(title: str, message: str, status: str) -> Page:
        return Page(title, render("parts", "message", text=message), status=status)
