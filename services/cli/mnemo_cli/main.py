"""``mnemo``: run MnemoLite locally and talk to it.

Human output by default, ``--json`` for scripts. Talks HTTP to MNEMO_URL (default
http://127.0.0.1:8000, or the port in MNEMO_API_PORT) with MNEMO_API_KEY."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mnemo_cli import code, ops
from mnemo_cli.client import ApiError, Client, post_once, seg
from mnemo_cli.show import shown

FINISHED = ("succeeded", "failed", "cancelled")
# soft_wrap: lines are never cut by rich (a terminal wraps them; a pipe gets them whole,
# ids and all); tables still fit the width.
console = Console(soft_wrap=True)
# Errors and notes are printed with soft_wrap too (a long symbol name stays on its line in a
# pipe); the console itself keeps wrapping for the progress bars drawn on it.
err = Console(stderr=True)


def _not_json(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity: not JSON, the API refuses them


def _value(text: str) -> Any:
    """A K=V value: JSON when it is JSON (true, null, {"a": 1}, 42), else the text. A
    number stays text unless JSON writes it back the same (1.10 and 1e3 stay as typed)."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if json.dumps(value) == text.strip() else text
    return value


def _meta(pairs: list[str], flag: str = "--meta") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SystemExit(f"mnemo: {flag} wants key=value, got {p!r}")
        out[key] = _value(value)
    return out


def _print(args: argparse.Namespace, data: Any, human: Any = None) -> None:
    if args.json or human is None:
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def cmd_up(args: argparse.Namespace) -> int:
    from mnemo_cli.runner import up
    from mnemo_core import service

    overrides = {
        k: v
        for k, v in {"embedders": args.embedders, "indexers": args.indexers}.items()
        if v is not None
    }
    return up(service.start("mnemo-up", **overrides))


def cmd_events_add(args: argparse.Namespace, c: Client) -> int:
    if not args.text.strip():
        err.print("mnemo: nothing to add: the event's text is empty", style="red", soft_wrap=True)
        return 2
    body = {"content": {"text": args.text}, "metadata": _meta(args.meta or [])}
    data = post_once(c, "/v1/events", json=body)
    _print(
        args,
        data,
        lambda d: console.print(
            f"event [bold]{d['event_id']}[/] {d['status']}"
            + (f", job [bold]{d['job_id']}[/]" if d.get("job_id") else "")
        ),
    )
    return 0


def _job_line(j: dict[str, Any]) -> str:
    p = j["progress"]
    counts = f"{p['done']}/{p['total']} failed {p['failed']}"
    return f"{j['id']}  {j['kind']:<14} {j['status']:<10} {counts}"


def _show_job(j: dict[str, Any]) -> None:
    console.print(_job_line(j))
    if j.get("error"):
        console.print(f"  error: {shown(j['error'])}", style="red")
    for f in j.get("failures", [])[:20]:
        console.print(
            f"  failed {f['item_kind']} {shown(f['item_id'])}: {shown(f['error'])}", style="red"
        )


def cmd_jobs_show(args: argparse.Namespace, c: Client) -> int:
    job = c.get(f"/v1/jobs/{seg(args.id)}")
    if args.watch and job["status"] not in FINISHED:
        job = _watch_job(c, args.id, job, quiet=args.json)
    _print(args, job, _show_job)
    return 0 if job["status"] != "failed" else 1


def _watch_job(c: Client, job_id: str, job: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task(
            job["kind"], total=job["progress"]["total"] or None, status=job["status"]
        )
        while job["status"] not in FINISHED:
            time.sleep(0.5)
            job = c.get(f"/v1/jobs/{seg(job_id)}")
            p = job["progress"]
            bar.update(
                task,
                total=p["total"] or None,
                completed=p["done"] + p["failed"],
                status=job["status"],
            )
    return job


def cmd_jobs_list(args: argparse.Namespace, c: Client) -> int:
    params = {
        k: v
        for k, v in {"status": args.status, "kind": args.kind, "limit": args.limit}.items()
        if v
    }
    data = c.get("/v1/jobs", params=params)

    def human(d: dict[str, Any]) -> None:
        for j in d["jobs"]:
            console.print(_job_line(j))
        if not d["jobs"]:
            console.print("no jobs")

    _print(args, data, human)
    return 0


def _text_of(event: dict[str, Any]) -> str:
    """An event's text as the API embeds it (MnemoLite's rule), else its content as JSON."""
    content = event["content"]
    return next(
        (
            content[k]
            for k in ("text", "body", "message", "content", "title")
            if isinstance(content.get(k), str) and content[k].strip()
        ),
        json.dumps(content),
    )


def cmd_events_list(args: argparse.Namespace, c: Client) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.filter:
        params["filter_metadata"] = json.dumps(_meta(args.filter, "--filter"))
    if args.status:
        params["embedding_status"] = args.status
    if args.cursor:
        params["cursor"] = args.cursor
    data = c.get("/v1/events", params=params)

    def human(d: dict[str, Any]) -> None:
        for e in d["events"]:
            console.print(
                f"{e['timestamp'][:19]}  {e['id']}  {e['embedding_status']:<9} "
                f"{shown(_text_of(e)[:80])}",
                highlight=False,
            )
        if not d["events"]:
            console.print("no events")
        if d["next_cursor"]:
            console.print(f"more: --cursor {d['next_cursor']}", style="dim")

    _print(args, data, human)
    return 0


def cmd_search(args: argparse.Namespace, c: Client) -> int:
    params: dict[str, Any] = {"q": args.text, "limit": args.limit}
    if args.filter:
        params["filter_metadata"] = json.dumps(_meta(args.filter, "--filter"))
    data = c.get("/v1/search", params=params)

    def human(d: dict[str, Any]) -> None:
        for r in d["results"]:
            console.print(f"[bold]{r['score']:.3f}[/]  {r['id']}  {shown(_text_of(r)[:100])}")
        if not d["results"]:
            console.print("no results")

    _print(args, data, human)
    return 0


def _queue_table(d: dict[str, Any]) -> Table:
    t = Table("queue", "depth", "visible", "in_flight", "oldest_s", "dead", "sent")
    for q in d["queues"]:
        t.add_row(
            q["queue"],
            str(q["depth"]),
            str(q["visible"]),
            str(q["in_flight"]),
            str(q["oldest_age_s"] if q["oldest_age_s"] is not None else "-"),
            str(q["dead_letters"] if q["dead_letters"] is not None else "-"),
            str(q["total_messages"]),
        )
    return t


def cmd_queues(args: argparse.Namespace, c: Client) -> int:
    if not args.watch:
        _print(args, c.get("/v1/queues"), lambda d: console.print(_queue_table(d)))
        return 0
    from rich.live import Live

    with Live(_queue_table(c.get("/v1/queues")), console=console, refresh_per_second=1) as live:
        while True:
            time.sleep(args.interval)
            live.update(_queue_table(c.get("/v1/queues")))


def _age(iso: str | None, now: dt.datetime) -> str:
    """``12s ago`` / ``3m ago`` / ``5h ago`` / ``2d ago`` from an ISO timestamp."""
    if not iso:
        return "-"
    try:
        then = dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    s = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{s:.0f}s ago"


def _gone(w: dict[str, Any]) -> str:
    """A worker that is not alive: it said it stopped, or it went silent (dead)."""
    return "stopped" if w.get("stopped_at") else "dead"


def workers_table(d: dict[str, Any], now: dt.datetime | None = None) -> Table:
    now = now or dt.datetime.now(dt.UTC)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    t.add_column("id", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    for name in ("heartbeat", "processed", "failed", "batch"):
        t.add_column(name, no_wrap=True, justify="right")
    for w in d["workers"]:
        age = _age(w.get("last_heartbeat"), now)
        t.add_row(
            w["id"],
            w["kind"],
            f"[green]{age}[/]" if w["alive"] else f"[red]{age}, {_gone(w)}[/]",
            str(w["processed"]),
            str(w["failed"]),
            str(w["batch_size"]),
        )
    return t


def print_workers(d: dict[str, Any], out: Console, now: dt.datetime | None = None) -> None:
    """A table when it fits the terminal; else a block per worker, so the worker id (what
    an operator copies into a query or a kill) is never cut and the rest wraps."""
    now = now or dt.datetime.now(dt.UTC)
    table = workers_table(d, now)
    natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if natural <= out.width:
        out.print(table)
        return
    for w in d["workers"]:
        out.print(Text(w["id"], style="bold", overflow="fold"))
        alive = "[green]alive[/]" if w["alive"] else f"[red]{_gone(w)}[/]"
        details = (
            f"{w['kind']}  {alive}  heartbeat {_age(w.get('last_heartbeat'), now)}  "
            f"processed {w['processed']}  failed {w['failed']}  batch {w['batch_size']}"
        )
        out.print(Padding(details, (0, 0, 0, 2)))
    if not d["workers"]:
        out.print("no workers")


def cmd_workers(args: argparse.Namespace, c: Client) -> int:
    _print(args, c.get("/v1/workers"), lambda d: print_workers(d, console))
    return 0


class CommandParser(argparse.ArgumentParser):
    """``mnemo`` and every subcommand under it take the global options, so they may come
    before or after the subcommand: ``mnemo --json jobs show ID`` and ``mnemo jobs show ID
    --json`` alike. Below the top level their default is SUPPRESS: a subcommand never
    resets what was given before it. Subparsers inherit the class (argparse makes nested
    subparsers of the parent's type)."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--json",
            action="store_true",
            default=False if top else argparse.SUPPRESS,
            help="machine-readable output",
        )
        self.add_argument(
            "--url", default=None if top else argparse.SUPPRESS, help="API URL (MNEMO_URL)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="mnemo",
        description=(__doc__ or "").replace("``", ""),  # the docstring's markup, not --help's
        formatter_class=argparse.RawDescriptionHelpFormatter,
        top=True,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="start PostgreSQL, the API and the workers locally")
    up.add_argument("--embedders", type=int, help="embedder processes (MNEMO_EMBEDDERS)")
    up.add_argument("--indexers", type=int, help="indexer processes (MNEMO_INDEXERS)")
    up.set_defaults(fn=cmd_up, local=True)

    ev = sub.add_parser("events", help="store events").add_subparsers(dest="sub", required=True)
    add = ev.add_parser("add", help="store a note; its embedding is queued")
    add.add_argument("text")
    add.add_argument(
        "--meta",
        action="append",
        metavar="K=V",
        help="metadata (repeatable); V is JSON when it is (42, true, {...}), else text",
    )
    add.set_defaults(fn=cmd_events_add)
    el = ev.add_parser("list", help="events newest first, a page at a time")
    el.add_argument("--limit", type=int, default=20)
    el.add_argument("--filter", action="append", metavar="K=V", help="metadata must contain")
    el.add_argument(
        "--status",
        choices=["pending", "done", "skipped", "failed", "cancelled"],
        help="embedding status",
    )
    el.add_argument("--cursor", help="the next page: the cursor the page before printed")
    el.set_defaults(fn=cmd_events_list)

    jb = sub.add_parser("jobs", help="inspect jobs").add_subparsers(dest="sub", required=True)
    show = jb.add_parser("show", help="one job")
    show.add_argument("id")
    show.add_argument("--watch", action="store_true", help="progress bar until it finishes")
    show.set_defaults(fn=cmd_jobs_show)
    ls = jb.add_parser("list", help="recent jobs, newest first")
    ls.add_argument("--status")
    ls.add_argument("--kind")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(fn=cmd_jobs_list)

    se = sub.add_parser("search", help="semantic search over events")
    se.add_argument("text")
    se.add_argument("--limit", type=int, default=10)
    se.add_argument("--filter", action="append", metavar="K=V", help="metadata must contain")
    se.set_defaults(fn=cmd_search)

    qu = sub.add_parser("queues", help="queue depth table")
    qu.add_argument("--watch", action="store_true", help="refresh live")
    qu.add_argument("--interval", type=float, default=2.0)
    qu.set_defaults(fn=cmd_queues)

    code.register(sub)

    wk = sub.add_parser("workers", help="workers and their heartbeats")
    wk.set_defaults(fn=cmd_workers)
    ops.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "local", False):
        sys.exit(args.fn(args))
    client = Client(args.url)
    try:
        code = args.fn(args, client)
    except ApiError as exc:
        if getattr(args, "json", False):  # scripts read errors as they read answers
            print(json.dumps({"error": exc.detail, "status": exc.status or None}), file=sys.stderr)
        else:
            err.print(f"mnemo: {shown(exc)}", style="red", soft_wrap=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        client.close()
    sys.exit(code)
