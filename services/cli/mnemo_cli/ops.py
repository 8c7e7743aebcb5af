"""Operator commands: ``mnemo dlq list|replay``, ``mnemo status``, ``mnemo migrate``.

``register(subparsers)`` adds them to ``mnemo``; like the other commands they print a human
view by default and JSON with ``--json``. ``migrate`` talks to the database itself (it is the
container stack's one-shot ``migrate`` service); the others talk HTTP to the API."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from mnemo_cli.client import ApiError, Client, seg
from mnemo_cli.show import shown

# soft_wrap: lines are never cut by rich (a terminal wraps them; a pipe gets them whole,
# ids and all); tables still fit the width.
console = Console(soft_wrap=True)
err = Console(stderr=True)


def _print(args: argparse.Namespace, data: Any, human: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)


# -- dead letters ------------------------------------------------------------------------


ERROR_MIN_WIDTH = 24  # narrower than this, a letter's error is easier read as a block


def _letters_table(d: dict[str, Any]) -> None:
    """A table when it fits; else a block per letter. Ids and times (what an operator copies
    into ``replay`` or a query) are never cut either way; the error folds."""
    names = ("id", "dead-lettered at", "job", "kind", "items", "attempts")
    rows = [
        (
            str(m["id"]),
            m["dead_lettered_at"],
            shown(m["job_id"] or "-"),
            shown(m["kind"] or "-"),
            str(m["items"] if m["items"] is not None else "-"),
            str(m["attempts"] if m["attempts"] is not None else "-"),
            shown((m["error"] or "")[:240]),
        )
        for m in d["messages"]
    ]
    fixed = Table(*names)  # what must fit whole, measured alone
    for row in rows:
        fixed.add_row(*row[:-1])
    wide = console.options.update_width(10_000)
    if Measurement.get(console, wide, fixed).maximum + ERROR_MIN_WIDTH <= console.width:
        t = Table()
        for name in names:
            t.add_column(name, no_wrap=True)
        t.add_column("error", overflow="fold", min_width=ERROR_MIN_WIDTH)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    else:
        for i, at, job, kind, items, attempts, error in rows:
            console.print(Text(f"{i}  {at}", style="bold"))
            console.print(
                Padding(f"job {job}  kind {kind}  items {items}  attempts {attempts}", (0, 0, 0, 2))
            )
            console.print(Padding(Text.from_markup(error, overflow="fold"), (0, 0, 0, 2)))
    if not d["messages"]:
        console.print(f"{d['queue']} is empty")
    elif d.get("next_after"):
        console.print(f"more: --after {d['next_after']}")


def cmd_dlq_list(args: argparse.Namespace, c: Client) -> int:
    params = {"limit": args.limit, "after": args.after}
    _print(args, c.get(f"/v1/dlq/{seg(args.queue)}", params=params), _letters_table)
    return 0


def cmd_dlq_replay(args: argparse.Namespace, c: Client) -> int:
    body = {"ids": args.id} if args.id else None
    data = c.post(f"/v1/dlq/{seg(args.queue)}/replay", json=body)

    def human(d: dict[str, Any]) -> None:
        console.print(
            f"replayed {d['replayed']} dead letters of {d['queue']}: "
            f"{d['requeued_items']} items pending again"
        )
        for s in d["skipped"]:
            console.print(f"  skipped {s['id']}: {shown(s['reason'])}", style="yellow")
        if d["not_found"]:
            console.print(f"  not found: {', '.join(map(str, d['not_found']))}", style="red")

    _print(args, data, human)
    return 1 if data["not_found"] else 0


# -- status ------------------------------------------------------------------------------


def _ready(c: Client) -> dict[str, Any]:
    try:
        return dict(c.get("/ready"))
    except ApiError as exc:
        if exc.status == 0:
            raise
        return {"status": "unavailable", "detail": exc.detail}


def cmd_status(args: argparse.Namespace, c: Client) -> int:
    ready = _ready(c)
    data: dict[str, Any] = {"url": c.url, "ready": ready}
    if ready.get("status") == "ready":
        data["queues"] = c.get("/v1/queues")["queues"]
        data["workers"] = c.get("/v1/workers")["workers"]
        data["failed_jobs"] = c.get("/v1/jobs", params={"status": "failed", "limit": 5})["jobs"]

    def human(d: dict[str, Any]) -> None:
        ok = d["ready"].get("status") == "ready"
        console.print(f"{d['url']}: " + ("[green]ready[/]" if ok else f"[red]{d['ready']}[/]"))
        if not ok:
            return
        for q in d["queues"]:
            dead = q["dead_letters"]
            console.print(
                f"  queue {q['queue']:<12} depth {q['depth']:>6}  in flight {q['in_flight']:>5}"
                + (f"  [red]dead letters {dead}[/]" if dead else "")
            )
        alive: dict[str, int] = {}
        for w in d["workers"]:
            alive[w["kind"]] = alive.get(w["kind"], 0) + int(w["alive"])
        console.print(
            "  live workers: "
            + (", ".join(f"{k} {n}" for k, n in sorted(alive.items())) or "[red]none[/]")
        )
        for j in d["failed_jobs"]:
            console.print(f"  failed job {j['id']} {j['kind']}: {shown(j['error'])}", style="red")

    _print(args, data, human)
    return 0 if ready.get("status") == "ready" else 1


# -- migrate -----------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the migrations to MNEMO_DATABASE_URL and exit (the stack's one-shot step)."""
    from mnemo_core import logging as mlog
    from mnemo_core import service
    from mnemo_core.errors import MnemoError

    settings = service.start("migrate")
    log = mlog.get(__name__)
    try:
        applied = asyncio.run(
            service.migrate_when_ready(
                settings.dsn(),
                embedding_dim=settings.embedding_dim,
                application_name="mnemo-migrate",
                within_s=args.wait,
            )
        )
    except MnemoError as exc:
        log.error("migrate_failed", error=str(exc))
        return 1
    log.info("migrations_up_to_date", applied_now=applied)
    return 0


def register(sub: Any) -> None:
    dl = sub.add_parser("dlq", help="dead letters: list and replay")
    dsub = dl.add_subparsers(dest="sub", required=True)
    ls = dsub.add_parser("list", help="dead letters with their errors (nothing is consumed)")
    ls.add_argument("queue", help="embed or index (or embed_dlq, index_dlq)")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--after", type=int, default=0, help="list ids above this one")
    ls.set_defaults(fn=cmd_dlq_list)
    rp = dsub.add_parser("replay", help="send dead letters back to their queue")
    rp.add_argument("queue", help="embed or index (or embed_dlq, index_dlq)")
    rp.add_argument(
        "--id", type=int, action="append", metavar="N", help="only this message (repeatable)"
    )
    rp.set_defaults(fn=cmd_dlq_replay)

    st = sub.add_parser("status", help="readiness, queues, live workers, failed jobs")
    st.set_defaults(fn=cmd_status)

    mg = sub.add_parser("migrate", help="apply database migrations and exit")
    mg.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the database")
    mg.set_defaults(fn=cmd_migrate, local=True)
