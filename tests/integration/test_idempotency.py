"""``Idempotency-Key`` on the event writes and the code upload: a request sent again answers
as the first one did and stores nothing more, against the real database
(mnemo_core.idempotency)."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from mnemo_api.routes import events as event_routes
from mnemo_core import code, idempotency
from mnemo_core.errors import InvalidInput
from tests.helpers import DIM, tar_gz_of
from tests.integration.test_api import client_for, make_settings

EVENT = {"content": {"text": "water the ficus"}, "metadata": {"room": "hall"}}
BATCH = {"events": [{"content": {"text": "first"}}, {"content": {"body": "second"}}]}


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn)):
        yield c


async def _rows(dsn: str, *tables: str) -> tuple[int, ...]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
        )
        return tuple(int(n) for n in row)
    finally:
        await conn.close()


async def counts(dsn: str) -> tuple[int, ...]:
    """(events, jobs, messages on the embed queue)."""
    return await _rows(dsn, "events", "jobs", "pgmq.q_embed")


async def test_a_repeated_event_answers_as_the_first_and_stores_nothing(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k = key()
    first = await api.post("/v1/events", json=EVENT, headers=k)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    # The same request, sent as a client would after a lost answer: other key order.
    again = await api.post(
        "/v1/events", json={"metadata": {"room": "hall"}, "content": EVENT["content"]}, headers=k
    )
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await counts(dsn) == (1, 1, 1)
    # Without a key, the same event is a new one.
    other = await api.post("/v1/events", json=EVENT)
    assert other.status_code == 202 and other.json()["event_id"] != first.json()["event_id"]
    assert await counts(dsn) == (2, 2, 2)


async def test_a_stored_event_and_a_batch_replay_their_own_answers(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k = key()
    own = {"content": {"text": "x"}, "embedding": [0.25] * DIM}
    first = await api.post("/v1/events", json=own, headers=k)
    again = await api.post("/v1/events", json=own, headers=k)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.json()["status"] == "stored"
    # The same key on the batch route is another key: keys are per route.
    batch = await api.post("/v1/events/batch", json=BATCH, headers=k)
    assert batch.status_code == 202, batch.text
    replay = await api.post("/v1/events/batch", json=BATCH, headers=k)
    assert replay.status_code == 202 and replay.json() == batch.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(batch.json()["event_ids"]) == 2
    assert await counts(dsn) == (3, 1, 1)


async def test_a_key_reused_for_another_request_is_refused(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k = key()
    assert (await api.post("/v1/events", json=EVENT, headers=k)).status_code == 202
    r = await api.post("/v1/events", json={"content": {"text": "another"}}, headers=k)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("header.Idempotency-Key: already used for a different")
    assert await counts(dsn) == (1, 1, 1)


async def test_a_refused_request_does_not_use_its_key(api: httpx.AsyncClient, dsn: str) -> None:
    k = key()
    bad = await api.post("/v1/events", json={**EVENT, "embedding": [0.5] * 3}, headers=k)
    assert bad.status_code == 422 and "dimensions" in bad.text
    good = await api.post("/v1/events", json=EVENT, headers=k)
    assert good.status_code == 202 and "idempotent-replayed" not in good.headers
    assert await counts(dsn) == (1, 1, 1)


async def test_concurrent_repeats_store_once(api: httpx.AsyncClient, dsn: str) -> None:
    k = key()
    answers = await asyncio.gather(
        *(api.post("/v1/events/batch", json=BATCH, headers=k) for _ in range(8))
    )
    assert {r.status_code for r in answers} == {202}
    assert len({r.text for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 7
    assert await counts(dsn) == (2, 1, 1)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ('"quoted-key"', True),  # the IETF draft's structured-field string
        ("a" * 255, True),
        ("", False),
        ('""', False),
        ("a" * 256, False),
        ("tab\there", False),
        ("caf\u00e9", False),
    ],
)
async def test_the_key_is_printable_ascii(
    api: httpx.AsyncClient, dsn: str, value: str, accepted: bool
) -> None:
    r = await api.post(
        "/v1/events",
        json=EVENT,
        headers=[("Idempotency-Key", value.encode("latin-1"))],  # type: ignore[list-item]
    )
    if accepted:
        assert r.status_code == 202, r.text
    else:
        assert r.status_code == 422
        assert r.json()["detail"] == (
            "header.Idempotency-Key: must be 1 to 255 printable ASCII characters"
        )
        assert await counts(dsn) == (0, 0, 0)


async def test_a_quoted_key_is_the_same_key(api: httpx.AsyncClient) -> None:
    first = await api.post("/v1/events", json=EVENT, headers={"Idempotency-Key": '"k-1"'})
    again = await api.post("/v1/events", json=EVENT, headers={"Idempotency-Key": "k-1"})
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


async def test_an_expired_key_is_new_and_expired_keys_are_purged(dsn: str) -> None:
    async for api in client_for(make_settings(dsn, idempotency_ttl_s=3600)):
        k = key()
        first = await api.post("/v1/events", json=EVENT, headers=k)
        conn = await asyncpg.connect(dsn)
        try:
            # Two hours ago: past the TTL. Another old key, of a request never repeated.
            await conn.execute(
                "UPDATE idempotency_keys SET created_at = now() - interval '2 hours'"
            )
            assert (await api.post("/v1/events", json=EVENT, headers=key())).status_code == 202
            await conn.execute(
                "UPDATE idempotency_keys SET created_at = now() - interval '2 hours'"
                " WHERE key <> $1",
                k["Idempotency-Key"],
            )
            again = await api.post("/v1/events", json=EVENT, headers=k)
            assert again.status_code == 202 and "idempotent-replayed" not in again.headers
            assert again.json()["event_id"] != first.json()["event_id"]
            # The route purges at most every PURGE_EVERY_S: the first keyed request purged
            # (nothing old yet); a purge due now deletes the expired one and keeps the rest.
            app_state = api._transport.app.state.mnemo  # type: ignore[attr-defined]
            app_state.idempotency_purge_at = 0.0
            assert (await api.post("/v1/events", json=EVENT, headers=key())).status_code == 202
            left = await conn.fetch("SELECT key FROM idempotency_keys ORDER BY created_at")
            assert k["Idempotency-Key"] in {r["key"] for r in left}
            assert len(left) == 2
        finally:
            await conn.close()


async def test_purge_takes_the_oldest_in_batches(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, status, response, created_at)"
            " SELECT 's', 'k' || i, '\\x00', 202, '{}', now() - make_interval(mins => i)"
            " FROM generate_series(1, 30) i"
        )
        # Past 10.5 minutes: the 20 keys of 11 to 30 minutes ago.
        assert await idempotency.purge(conn, ttl_s=630, limit=7) == 7
        oldest_left = await conn.fetchval("SELECT min(created_at) FROM idempotency_keys")
        assert await conn.fetchval(
            "SELECT now() - $1::timestamptz < interval '24 minutes'", oldest_left
        )  # 30 to 24 minutes ago went first
        assert await idempotency.purge(conn, ttl_s=630) == 13
        assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 10


async def test_the_fast_path_leaves_keyed_requests_to_the_route(api: httpx.AsyncClient) -> None:
    scope = {
        "type": "http",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"idempotency-key", b"k")],
    }
    assert event_routes._accepted_event(scope, b'{"content": {"text": "x"}}', DIM) is None
    scope["headers"] = scope["headers"][:1]
    assert event_routes._accepted_event(scope, b'{"content": {"text": "x"}}', DIM) is not None


async def test_the_header_is_documented(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path in ("/v1/events", "/v1/events/batch"):
        params = spec["paths"][path]["post"].get("parameters", [])
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)


async def test_a_key_given_twice_is_refused(api: httpx.AsyncClient, dsn: str) -> None:
    """Which one counts would be a guess (the first did); a proxy merging the two lines
    would make a third key of them."""
    for path, body in (("/v1/events", EVENT), ("/v1/events/batch", BATCH)):
        r = await api.post(
            path, json=body, headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")]
        )
        assert r.status_code == 422
        assert r.json()["detail"] == "header.Idempotency-Key: given more than once"
    assert await counts(dsn) == (0, 0, 0)


async def test_the_replay_header_is_documented(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path in ("/v1/events", "/v1/events/batch"):
        for status in ("201", "202"):
            answer = spec["paths"][path]["post"]["responses"][status]
            assert "Idempotent-Replayed" in answer["headers"]


# ------------------------------ code upload ------------------------------

CODE = {
    "pkg/util.py": "def add(a, b):\n    return a + b\n",
    "pkg/main.py": "from pkg.util import add\n\ndef run():\n    return add(1, 2)\n",
}
UPLOAD = {
    "repository": "demo",
    "commit": "abc123",
    "files": [{"path": p, "content": c} for p, c in CODE.items()],
}
FORM = {"repository": "demo", "prune": "true"}


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in reversed(files.items()):  # another member order too
            zf.writestr(path, text)
    return buf.getvalue()


def archive(data: bytes, name: str = "demo.tgz") -> dict[str, tuple[str, bytes, str]]:
    return {"archive": (name, data, "application/octet-stream")}


async def code_counts(dsn: str) -> tuple[int, ...]:
    """(jobs, code files, messages on the index queue)."""
    return await _rows(dsn, "jobs", "code_files", "pgmq.q_index")


async def test_a_repeated_code_upload_answers_as_the_first_and_makes_no_job(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k = key()
    first = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    assert first.json()["files_changed"] == 2
    # The same request, as a client sends it after a lost answer: other key order.
    again = await api.post("/v1/code/index", json=dict(reversed(UPLOAD.items())), headers=k)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()  # the same job, the same counts (2 changed)
    assert again.headers["idempotent-replayed"] == "true"
    assert await code_counts(dsn) == (1, 2, 1)
    # Without a key the same upload is another job, which takes the files over from the
    # first (not parsed yet).
    other = await api.post("/v1/code/index", json=UPLOAD)
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]
    assert await code_counts(dsn) == (2, 2, 2)


async def test_a_repeated_archive_upload_answers_as_the_first(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k = key()
    tgz = tar_gz_of({**CODE, "logo.png": "\x00PNG"})
    first = await api.post("/v1/code/index", data=FORM, files=archive(tgz), headers=k)
    assert first.status_code == 202, first.text
    assert first.json()["skipped"] == [{"path": "logo.png", "reason": "binary file (NUL bytes)"}]
    again = await api.post("/v1/code/index", data=FORM, files=archive(tgz), headers=k)
    assert again.status_code == 202, again.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    # What identifies an archive upload is what it holds: the same files archived again
    # (a zip, its members in another order) are the same request.
    zipped = zip_of({**CODE, "logo.png": "\x00PNG"})
    as_zip = await api.post(
        "/v1/code/index", data=FORM, files=archive(zipped, "demo.zip"), headers=k
    )
    assert as_zip.status_code == 202 and as_zip.json() == first.json()
    assert as_zip.headers["idempotent-replayed"] == "true"
    assert await code_counts(dsn) == (1, 2, 1)


@pytest.mark.parametrize(
    "change",
    ["json content", "json prune", "archive content", "archive form", "archive for json"],
)
async def test_a_code_upload_key_reused_for_another_request_is_refused(
    api: httpx.AsyncClient, dsn: str, change: str
) -> None:
    k = key()
    if change.startswith("json"):
        first = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    else:
        first = await api.post(
            "/v1/code/index", data=FORM, files=archive(tar_gz_of(CODE)), headers=k
        )
    assert first.status_code == 202, first.text
    if change == "json content":
        files = [{"path": "pkg/util.py", "content": "def add(a, b):\n    return b + a\n"}]
        r = await api.post("/v1/code/index", json={**UPLOAD, "files": files}, headers=k)
    elif change == "json prune":
        r = await api.post("/v1/code/index", json={**UPLOAD, "prune": True}, headers=k)
    elif change == "archive content":
        changed = tar_gz_of({**CODE, "pkg/util.py": "def add(a, b):\n    return b + a\n"})
        r = await api.post("/v1/code/index", data=FORM, files=archive(changed), headers=k)
    elif change == "archive form":
        form = {**FORM, "commit": "def456"}
        r = await api.post("/v1/code/index", data=form, files=archive(tar_gz_of(CODE)), headers=k)
    else:  # the same files as JSON after an archive
        r = await api.post("/v1/code/index", json={**UPLOAD, "commit": None}, headers=k)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("header.Idempotency-Key: already used for a different")
    assert await code_counts(dsn) == (1, 2, 1)


async def test_concurrent_repeated_code_uploads_make_one_job(
    api: httpx.AsyncClient, dsn: str
) -> None:
    k, k2 = key(), key()
    tgz = tar_gz_of(CODE)
    answers = await asyncio.gather(
        *(api.post("/v1/code/index", json=UPLOAD, headers=k) for _ in range(6)),
        *(api.post("/v1/code/index", data=FORM, files=archive(tgz), headers=k2) for _ in range(3)),
    )
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    as_json, as_archive = answers[:6], answers[6:]
    # Byte for byte: a replay keeps the first answer's order of keys.
    assert len({r.text for r in as_json}) == 1 and len({r.text for r in as_archive}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in as_json) == 5
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in as_archive) == 2
    assert (await code_counts(dsn))[0] == 2  # one job a key


async def test_a_refused_code_upload_does_not_use_its_key(api: httpx.AsyncClient, dsn: str) -> None:
    k = key()
    refused = [
        await api.post(
            "/v1/code/index",
            json={"repository": "demo", "files": [{"path": "../x.py", "content": "x = 1\n"}]},
            headers=k,
        ),
        await api.post("/v1/code/index", json={"repository": "demo", "files": []}, headers=k),
        await api.post(
            "/v1/code/index",
            data=FORM,
            files=archive(tar_gz_of({**CODE, "../evil.py": "x = 1\n"})),
            headers=k,
        ),
        await api.post(
            "/v1/code/index", data=FORM, files=archive(tar_gz_of({"a.bin": "\x00"})), headers=k
        ),
    ]
    assert [r.status_code for r in refused] == [422] * 4, [r.text for r in refused]
    assert await code_counts(dsn) == (0, 0, 0)
    # The key is still free: the first request accepted claims it...
    good = await api.post("/v1/code/index", data=FORM, files=archive(tar_gz_of(CODE)), headers=k)
    assert good.status_code == 202 and "idempotent-replayed" not in good.headers
    # ...and answers its repeat.
    again = await api.post("/v1/code/index", data=FORM, files=archive(tar_gz_of(CODE)), headers=k)
    assert again.json() == good.json() and again.headers["idempotent-replayed"] == "true"
    assert await code_counts(dsn) == (1, 2, 1)


async def test_an_upload_failing_in_its_transaction_leaves_no_job_and_no_key(
    api: httpx.AsyncClient, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is claimed and answered in the transaction that makes the job: when that
    transaction fails after the job was made, neither is left."""
    real = code.index_files

    async def then_fails(*args: Any, **kw: Any) -> Any:
        await real(*args, **kw)
        raise InvalidInput("body.files", "refused after the job was made")

    monkeypatch.setattr(code, "index_files", then_fails)
    k = key()
    r = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert r.status_code == 422 and "after the job was made" in r.text
    assert await code_counts(dsn) == (0, 0, 0)
    monkeypatch.setattr(code, "index_files", real)
    good = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert good.status_code == 202 and "idempotent-replayed" not in good.headers
    again = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert again.json() == good.json() and again.headers["idempotent-replayed"] == "true"
    assert await code_counts(dsn) == (1, 2, 1)


async def test_a_code_upload_key_is_the_routes_own(api: httpx.AsyncClient, dsn: str) -> None:
    """The key of an event write is another key on the upload route (and the other way)."""
    k = key()
    assert (await api.post("/v1/events", json=EVENT, headers=k)).status_code == 202
    first = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = await api.post("/v1/code/index", json=UPLOAD, headers=k)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert (await code_counts(dsn))[0] == 2  # the event's job and the upload's


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("Idempotency-Key", "one"), ("Idempotency-Key", "two")], "given more than once"),
        ([("Idempotency-Key", "tab\there")], "must be 1 to 255 printable ASCII characters"),
    ],
)
async def test_a_bad_code_upload_key_is_refused_before_the_body_is_read(
    api: httpx.AsyncClient, dsn: str, headers: list[tuple[str, str]], message: str
) -> None:
    for r in (
        await api.post("/v1/code/index", json=UPLOAD, headers=headers),
        await api.post(
            "/v1/code/index", data=FORM, files=archive(b"not an archive"), headers=headers
        ),
    ):
        assert r.status_code == 422
        assert r.json()["detail"] == f"header.Idempotency-Key: {message}"
    assert await code_counts(dsn) == (0, 0, 0)


async def test_the_code_upload_documents_the_header(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    route = spec["paths"]["/v1/code/index"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in route["parameters"])
    assert "Idempotent-Replayed" in route["responses"]["202"]["headers"]
