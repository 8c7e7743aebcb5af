"""``GET /v1/events``: events newest first, the filters of search, keyset pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import DIM
from tests.integration.test_api import client_for, make_settings


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn)):
        yield c


def at(day: int, hour: int = 12) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00Z"


async def store(api: httpx.AsyncClient) -> dict[str, str]:
    """Eleven events: six sharing one timestamp (ties), a stored vector, one without text."""
    events = [
        {
            "content": {"text": f"note {d}"},
            "metadata": {"day": d, "even": d % 2 == 0},
            "timestamp": at(d),
        }
        for d in range(1, 5)
    ]
    events += [
        {"content": {"text": f"tie {i}"}, "metadata": {"tie": True}, "timestamp": at(20)}
        for i in range(6)
    ]
    r = await api.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 202, r.text
    ids = dict(zip([e["content"]["text"] for e in events], r.json()["event_ids"], strict=True))
    r = await api.post(
        "/v1/events",
        json={"content": {"n": 1}, "timestamp": at(25), "metadata": {"day": 25}},
    )
    ids["no text"] = r.json()["event_id"]
    r = await api.post(
        "/v1/events",
        json={"content": {"text": "own"}, "embedding": [0.5] * DIM, "timestamp": at(10)},
    )
    ids["own"] = r.json()["event_id"]
    return ids


async def pages(api: httpx.AsyncClient, **params: object) -> list[list[dict]]:
    out, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await api.get("/v1/events", params=query)
        assert r.status_code == 200, r.text
        out.append(r.json()["events"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return out


async def test_newest_first_in_pages_that_miss_and_repeat_nothing(api: httpx.AsyncClient) -> None:
    ids = await store(api)
    everything = (await api.get("/v1/events", params={"limit": 200})).json()
    assert everything["next_cursor"] is None
    listed = everything["events"]
    assert len(listed) == 12
    stamps = [e["timestamp"] for e in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert listed[0]["id"] == ids["no text"] and listed[0]["embedding_status"] == "skipped"
    assert "embedding" not in listed[0]  # the vector is not sent
    # Pages of 4 through the six equal timestamps: the same events in the same order.
    paged = await pages(api, limit=4)
    assert [len(p) for p in paged] == [4, 4, 4]
    assert [e["id"] for p in paged for e in p] == [e["id"] for e in listed]
    # A page size that ends exactly at the last event says there is no next page.
    assert [len(p) for p in await pages(api, limit=6)] == [6, 6]


async def test_the_filters_of_search_and_the_status(api: httpx.AsyncClient) -> None:
    ids = await store(api)

    async def texts(**params: object) -> list[str]:
        got = [e for p in await pages(api, limit=3, **params) for e in p]
        by_id = {v: k for k, v in ids.items()}
        return [by_id[e["id"]] for e in got]

    assert await texts(filter_metadata=json.dumps({"even": True})) == ["note 4", "note 2"]
    # Both bounds inclusive.
    assert await texts(ts_start=at(2), ts_end=at(4)) == ["note 4", "note 3", "note 2"]
    assert await texts(ts_start=at(10), filter_metadata='{"tie": true}') == [
        t for t in await texts(filter_metadata='{"tie": true}')
    ]
    assert len(await texts(ts_start=at(10), filter_metadata='{"tie": true}')) == 6
    assert await texts(embedding_status="done") == ["own"]
    assert await texts(embedding_status="skipped") == ["no text"]
    assert len(await texts(embedding_status="pending")) == 10
    assert await texts(embedding_status="failed") == []
    assert (await api.get("/v1/events")).json()["next_cursor"] is None  # 12 < 20


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"cursor": "bm9wZQ=="}, "query.cursor: not a cursor returned by this API"),
        ({"filter_metadata": "[1]"}, "query.filter_metadata: filter_metadata must be a JSON"),
        ({"filter_metadata": "{"}, "query.filter_metadata: filter_metadata is not valid JSON"),
        ({"ts_start": at(5), "ts_end": at(4)}, "query: ts_start is after ts_end"),
        ({"embedding_status": "lost"}, "query.embedding_status:"),
        ({"limit": 0}, "query.limit:"),
        ({"status": "done"}, "query.status: unknown query parameter"),
    ],
)
async def test_bad_listing_requests_name_the_parameter(
    api: httpx.AsyncClient, params: dict[str, object], detail: str
) -> None:
    r = await api.get("/v1/events", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(detail), r.json()


async def test_an_empty_store_lists_nothing(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/events")).json() == {"events": [], "next_cursor": None}
