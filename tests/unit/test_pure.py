"""Pure logic as parameter tables: text extraction, retry policy, messages, queries, schemas."""

from __future__ import annotations

import argparse
import uuid

import pytest
from pydantic import ValidationError

from mnemo_api.main import insecure_bind_error, is_loopback
from mnemo_api.middleware import host_name, is_local_or_address
from mnemo_api.schemas import EventIn, SearchIn
from mnemo_core import retry, service
from mnemo_core.errors import PoisonMessage
from mnemo_core.messages import EmbedMessage, parse_embed
from mnemo_core.queries import Q, parse
from mnemo_core.settings import Settings
from mnemo_core.text import event_text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"text": "a"}, "a"),
        ({"text": "", "body": "b"}, "b"),
        ({"text": "   ", "message": "m"}, "m"),
        ({"content": "c", "title": "t"}, "c"),
        ({"title": "t"}, "t"),
        ({"text": 5, "title": "t"}, "t"),
        ({"content": {"nested": "no"}}, None),
        ({}, None),
        ("not a dict", None),
    ],
)
def test_event_text(content: object, expected: str | None) -> None:
    assert event_text(content) == expected


@pytest.mark.parametrize(
    ("error", "read_ct", "max_attempts", "expected"),
    [
        (ValueError("x"), 1, 5, retry.Retry(2)),
        (ValueError("x"), 2, 5, retry.Retry(4)),
        (ValueError("x"), 4, 5, retry.Retry(16)),
        (ValueError("x"), 5, 5, "dead"),
        (ValueError("x"), 9, 5, "dead"),
        (PoisonMessage("bad"), 1, 5, "dead"),
        (ValueError("x"), 20, 50, retry.Retry(300)),
    ],
)
def test_retry_policy(error: Exception, read_ct: int, max_attempts: int, expected: object) -> None:
    got = retry.decide(error, read_ct, max_attempts)
    if expected == "dead":
        assert isinstance(got, retry.DeadLetter)
    else:
        assert got == expected


def test_a_dead_letters_reason_is_the_errors_first_line() -> None:
    """PostgreSQL's errors go on with DETAIL and HINT lines; a job's failure shows one."""
    error = ValueError("index row size 3032 exceeds maximum 2704\nDETAIL: Index row ...\nHINT: ...")
    got = retry.decide(error, 5, 5)
    assert got == retry.DeadLetter(
        "gave up after 5 attempts: ValueError: index row size 3032 exceeds maximum 2704"
    )
    assert retry.decide(TimeoutError(), 5, 5) == retry.DeadLetter(
        "gave up after 5 attempts: TimeoutError"
    )


@pytest.mark.parametrize(("read_ct", "exhausted"), [(1, False), (5, False), (6, True)])
def test_exhausted(read_ct: int, exhausted: bool) -> None:
    assert retry.exhausted(read_ct, 5) is exhausted


def test_embed_message_round_trip() -> None:
    job, ev = uuid.uuid4(), str(uuid.uuid4())
    msg = EmbedMessage(job, "event", (ev,))
    assert parse_embed(msg.to_json()) == msg


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "text",
        {"kind": "event"},
        {"kind": "event", "ids": []},
        {"kind": "event", "ids": "abc"},
        {"kind": "event", "ids": ["nope"]},
        {"kind": "event", "ids": [str(uuid.uuid4())], "job_id": "nope"},
        {"kind": "chunk", "ids": [{"x": 1}]},
        {"kind": "other", "ids": [1]},
    ],
)
def test_bad_messages_are_poison(raw: object) -> None:
    with pytest.raises(PoisonMessage):
        parse_embed(raw)


def test_queries_file() -> None:
    assert "create_job" in Q and "search_events" in Q
    assert all(sql.strip() and not sql.endswith(";") for sql in Q.values())
    with pytest.raises(ValueError, match="twice"):
        parse("-- a --\nSELECT 1;\n-- a --\nSELECT 2;")


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        ({"content": {"text": "x"}}, True),
        ({"content": {"text": "x"}, "timestamp": "2024-01-01T00:00:00"}, True),
        ({"content": {"text": "x"}, "embedding": [1.0, float("nan")]}, False),
        ({"content": []}, False),
        ({"content": {}, "metadata": "x"}, False),
    ],
)
def test_event_validation(payload: dict, ok: bool) -> None:
    if ok:
        ev = EventIn(**payload)
        assert ev.timestamp is None or ev.timestamp.tzinfo is not None
    else:
        with pytest.raises(ValidationError):
            EventIn(**payload)


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        ({"q": "x"}, True),
        ({"vector": [1.0]}, True),
        ({"q": "x", "filter_metadata": '{"a": 1}'}, True),
        ({}, False),
        ({"q": "x", "vector": [1.0]}, False),
        ({"q": ""}, False),
        ({"q": "x", "filter_metadata": "{bad"}, False),
        ({"q": "x", "ts_start": "2024-02-01T00:00:00Z", "ts_end": "2024-01-01T00:00:00Z"}, False),
    ],
)
def test_search_validation(payload: dict, ok: bool) -> None:
    if ok:
        SearchIn(**payload)
    else:
        with pytest.raises(ValidationError):
            SearchIn(**payload)


@pytest.mark.parametrize(
    ("host", "keys", "insecure", "refused"),
    [
        ("127.0.0.1", "", False, False),
        ("localhost", "", False, False),
        ("::1", "", False, False),
        ("0.0.0.0", "", False, True),
        ("0.0.0.0", "k", False, False),
        ("0.0.0.0", "", True, False),
    ],
)
def test_insecure_bind(host: str, keys: str, insecure: bool, refused: bool) -> None:
    s = Settings(api_host=host, api_keys=keys, allow_insecure=insecure)
    assert (insecure_bind_error(s) is not None) is refused
    assert is_loopback("127.0.0.2")


@pytest.mark.parametrize(
    ("header", "name", "local"),
    [
        ("127.0.0.1:8000", "127.0.0.1", True),
        ("localhost", "localhost", True),
        ("LocalHost:8000", "localhost", True),
        ("api.localhost:1", "api.localhost", True),
        ("[::1]:8000", "::1", True),
        ("[::1]", "::1", True),
        ("192.168.1.5", "192.168.1.5", True),
        ("rebind.example:8000", "rebind.example", False),
        ("rebind.example.:8000", "rebind.example", False),
        ("localhost.rebind.example", "localhost.rebind.example", False),
        ("127.0.0.1.nip.io:8000", "127.0.0.1.nip.io", False),
        ("api", "api", False),
        ("api:notaport", "api:notaport", False),
    ],
)
def test_host_names(header: str, name: str, local: bool) -> None:
    assert host_name(header) == name
    assert is_local_or_address(name) is local


@pytest.mark.parametrize(
    ("keys", "hosts", "names"),
    [
        ("", "", frozenset()),
        ("", "api, Mnemo.Example.", frozenset({"api", "mnemo.example"})),
        ("", "api,*", None),
        ("k1", "api", None),
        ("k1", "", None),
    ],
)
def test_allowed_host_names(keys: str, hosts: str, names: frozenset[str] | None) -> None:
    assert Settings(api_keys=keys, allowed_hosts=hosts).allowed_host_names == names


@pytest.mark.parametrize(
    ("candidates", "bare", "expected"),
    [
        (["a.f", "b.f"], None, "b.f"),
        (["b.f", "a.f"], None, "b.f"),
        (["x.f"], "f", "pkg.f"),
        (["x.f"], "g", None),
        ([], None, None),
        (["mod"], None, "mod"),
    ],
)
def test_resolution_pick(candidates: list[str], bare: str | None, expected: str | None) -> None:
    from mnemo_core.resolve import pick

    assert pick(candidates, bare, {"b.f", "mod"}, {"f": "pkg.f"}) == expected


@pytest.mark.parametrize(
    ("legs", "expected"),
    [
        ([[1, 2, 3], [3, 2, 1]], [1, 3, 2]),  # 1/61 + 1/63 beats 2/62; 1 came first
        ([[1, 2], []], [1, 2]),
        ([[], [5, 6]], [5, 6]),
        ([[1], [2]], [1, 2]),  # a tie keeps first appearance
        ([[7, 8, 9], [9]], [9, 7, 8]),
        ([[], []], []),
    ],
)
def test_reciprocal_rank_fusion(legs: list[list[int]], expected: list[int]) -> None:
    from mnemo_core.codesearch import RRF_K, rrf

    fused = rrf(legs)
    assert [i for i, _ in fused] == expected
    if fused:
        top = fused[0][0]
        assert fused[0][1] == pytest.approx(
            sum(1 / (RRF_K + leg.index(top) + 1) for leg in legs if top in leg)
        )


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("retry with exponential backoff", ["retry", "exponential", "backoff"]),
        ("parseHTTPResponse", ["parsehttpresponse", "parse", "http", "response"]),
        ("snake_case_name()", ["snakecasename", "snake", "case", "name"]),
        ("'; DROP TABLE x; --", ["drop", "table"]),
        ("a & b | !c", []),
    ],
)
def test_lexical_terms(query: str, terms: list[str]) -> None:
    from mnemo_core.text import lexical_terms, tsquery

    assert lexical_terms(query) == terms
    assert all(ch.isalnum() or ch in " |:*" for ch in tsquery(terms))


@pytest.mark.parametrize(
    ("sizes", "limit", "most", "expected"),
    [
        ([], 10, None, []),
        ([3, 3, 3], 10, None, [[3, 3, 3]]),
        ([4, 4, 4], 10, None, [[4, 4], [4]]),
        ([20, 1, 1], 10, None, [[20], [1, 1]]),  # a file bigger than a batch goes alone
        ([1, 20, 1], 10, None, [[1], [20], [1]]),
        ([10, 10], 10, None, [[10], [10]]),
        ([1, 1, 1, 1, 1], 10, 2, [[1, 1], [1, 1], [1]]),  # at most `most` items a run
        ([1, 1, 9, 1], 10, 2, [[1, 1], [9, 1]]),
        ([20, 20], 10, 1, [[20], [20]]),
    ],
)
def test_batches(sizes: list[int], limit: int, most: int | None, expected: list[list[int]]) -> None:
    from mnemo_core.code import _batches

    assert [sizes[run] for run in _batches(sizes, limit, most)] == expected


def _lexemes(literal: str) -> dict[str, int]:
    """A tsvector literal of chunk_lexemes -> {word: positions}."""
    out = {}
    for entry in literal.split():
        word, _, positions = entry.partition(":")
        out[word] = len(positions.split(","))
    return out


def test_chunk_lexemes_hold_the_words_of_names_and_identifiers() -> None:
    from mnemo_core.text import chunk_lexemes

    lex = _lexemes(
        chunk_lexemes(
            "shop/pricing.py",
            "shop.pricing.apply_discount",
            "def apply_discount(price, pct):",
            "Lower a price by a percentage.",
            "def apply_discount(price, pct):\n    # see RFC\n    return parseHTTPResponse(price)",
        )
    )
    for word in [
        "shop",
        "pricing",
        "py",
        "apply",
        "discount",
        "price",
        "pct",
        "lower",
        "percentage",
        "parsehttpresponse",
        "parse",
        "http",
        "response",
        "rfc",
        "see",
    ]:
        assert word in lex, word
    assert "apply_discount" not in lex  # underscores separate, as in PostgreSQL's parser
    # Positions count occurrences: the name's words weigh more than a word said once.
    assert lex["discount"] > lex["percentage"] == 1


def test_chunk_lexemes_stay_within_postgres_limits() -> None:
    from mnemo_core.text import LEXEME_BUDGET, chunk_lexemes

    assert chunk_lexemes("", "", "", "", "") == ""
    lex = _lexemes(chunk_lexemes("a.py", "a.f", "", "the " * 400 + "café", "x" * 3000))
    assert lex["the"] == 255  # PostgreSQL keeps at most 256 positions of a lexeme
    assert "x" * 3000 not in lex  # over 2,047 bytes: PostgreSQL refuses it, to_tsvector drops it
    assert "café" in lex
    many = " ".join(f"name{i}" for i in range(60_000))
    literal = chunk_lexemes("a.py", "a.f", "", "", many)
    assert sum(len(w) for w in _lexemes(literal)) <= LEXEME_BUDGET


@pytest.mark.parametrize(("outcome", "code"), [(3, 3), (RuntimeError("no parser"), 1)])
def test_worker_main_exits_with_its_code_and_logs_a_failure(
    outcome: int | Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    async def amain(args: argparse.Namespace, settings: Settings) -> int:
        assert args.once and isinstance(settings, Settings)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    args = service.worker_arguments("indexer", None).parse_args(["--once"])
    with pytest.raises(SystemExit) as exited:
        service.run_main("indexer", amain, args)
    assert exited.value.code == code
    out = capsys.readouterr()
    logged = out.out + out.err
    if isinstance(outcome, Exception):
        assert "worker_failed" in logged and "no parser" in logged
    else:
        assert "worker_failed" not in logged


def test_uvicorns_copy_of_a_500s_traceback_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """The API logs a 500 once (unhandled_error, with its request id), not twice."""
    import logging

    from mnemo_api.main import LoggedAlready

    logger = logging.getLogger("uvicorn.error.test")
    logger.addFilter(LoggedAlready())
    with caplog.at_level(logging.INFO):
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            logger.exception("Exception in ASGI application\n")
        logger.error("Exception in callback")
        logger.info("Started server process")
    assert [r.getMessage() for r in caplog.records] == [
        "Exception in callback",
        "Started server process",
    ]


def test_an_outage_is_logged_at_once_then_summed_up_then_ended() -> None:
    """One line for the first failure, then at most one every ``every_s`` carrying the
    failures since the previous line, and one when the database answers: the counts add up
    to every failure."""
    import structlog

    from mnemo_core import db

    now = [0.0]
    outage = db.OutageLog(counted="refused", every_s=5.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for t in [0.0, 0.1, 1.0, 4.9, 5.0, 5.1, 9.9, 10.0, 12.0]:
            now[0] = t
            outage.failed(path="/v1/events")
        now[0] = 13.0
        outage.recovered()
        outage.recovered()  # the end is said once
        now[0] = 20.0
        outage.failed(path="/v1/jobs")  # a new outage starts with a line of its own
    assert [(e["event"], e["refused"], e["outage_s"]) for e in logs] == [
        ("database_unavailable", 1, 0.0),
        ("database_unavailable", 4, 5.0),
        ("database_unavailable", 3, 10.0),
        ("database_available", 1, 13.0),
        ("database_unavailable", 1, 0.0),
    ]
    assert logs[0]["path"] == "/v1/events" and logs[-1]["path"] == "/v1/jobs"


def test_asyncpgs_pool_warnings_about_an_absent_database_lose_their_traceback() -> None:
    """asyncpg logs each failed attempt to restore its pool's minimum with the connection
    error's whole traceback; the filter keeps one line, the error at its end. A record about
    anything else keeps its traceback."""
    import logging
    import sys

    from mnemo_core import db

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except type(exc):
            info = sys.exc_info()
        msg = "Failed to restore the pool connection floor; retrying"
        return logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, msg, None, info)

    away = record(ConnectionRefusedError(111, "Connect call failed"))
    assert db.BriefPoolWarnings().filter(away)
    assert away.exc_info is None
    assert away.getMessage() == (
        "Failed to restore the pool connection floor; retrying "
        "(ConnectionRefusedError: [Errno 111] Connect call failed)"
    )
    bug = record(ValueError("a bug"))
    assert db.BriefPoolWarnings().filter(bug)
    assert bug.exc_info is not None and bug.getMessage().endswith("retrying")
