"""Logs are structlog events with fields: a literal event name and key=value pairs, never a
message built with an f-string, ``%`` or ``.format`` (it hides the fields from JSON logs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "services").rglob("*.py"))
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}
LOGGERS = {"log", "logger", "_log", "self.log"}


def _is_log_call(node: ast.Call) -> bool:
    func = node.func
    if not isinstance(func, ast.Attribute) or func.attr not in LOG_METHODS:
        return False
    return ast.unparse(func.value) in LOGGERS


def _built_string(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(node))
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def test_sources_found() -> None:
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_log_calls_use_event_names_and_fields(path: Path) -> None:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and _is_log_call(node):
            if node.args and not (
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            ):
                bad.append(f"line {node.lineno}: the event must be a literal name")
            # The event and any positional argument; a field's value (a URL, say) may be
            # built, it is still a field.
            args = [*node.args, *(k.value for k in node.keywords if k.arg == "event")]
            if any(_built_string(a) for a in args):
                bad.append(f"line {node.lineno}: a formatted string in a log call")
    assert not bad, "\n".join(bad)
