"""The HTTP contract's rules on one exchange: a whole answer, its status, one JSON
Content-Type, the envelope (statusCode the HTTP status, status its reason phrase)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import jsonschema

from .http import Exchange
from .metadata import schema

if TYPE_CHECKING:
    from .context import CheckContext

JSON = "application/json"

# Reason phrases servers send besides this Python's own: the names of older and newer RFCs
# (Python 3.13 took RFC 9110's) and werkzeug's. Hyphens and case are not compared.
OTHER_PHRASES: dict[int, tuple[str, ...]] = {
    302: ("Moved Temporarily",),
    306: ("Switch Proxy",),
    413: ("Request Entity Too Large", "Payload Too Large", "Content Too Large"),
    414: ("Request-URI Too Long", "URI Too Long"),
    416: ("Requested Range Not Satisfiable", "Range Not Satisfiable"),
    422: ("Unprocessable Entity", "Unprocessable Content"),
    449: ("Retry With",),
    511: ("Network Authentication Failed",),
}


def require_answer(ctx: CheckContext, exchange: Exchange, rule: str) -> None:
    """A whole HTTP answer; when none came, what that says of the model (its exit, a kill for memory)."""
    if exchange.answered:
        return
    note, broken = ctx.unanswered(exchange)
    raise ctx.finding(exchange.route, "a whole HTTP answer", exchange.summary() + note, broken or rule)


def require_status(ctx: CheckContext, exchange: Exchange, expected: int, rule: str) -> None:
    require_answer(ctx, exchange, rule)
    if exchange.status != expected:
        raise ctx.finding(exchange.route, f"status {expected}", exchange.summary(), rule)


def require_json_envelope(ctx: CheckContext, exchange: Exchange) -> dict[str, Any]:
    """Content-Type application/json, a body matching the envelope, statusCode == the HTTP status."""
    require_answer(ctx, exchange, "json")
    require_json_type(ctx, exchange)
    return require_envelope_body(ctx, exchange)


def require_json_type(ctx: CheckContext, exchange: Exchange) -> None:
    """One Content-Type header, application/json: a client may read either of two."""
    values = exchange.header_values("Content-Type")
    if len(values) > 1:
        shown = ", ".join(repr(value[:100]) for value in values[:5])
        actual = f"{len(values)} Content-Type headers ({shown})"
        raise ctx.finding(exchange.route, f"one Content-Type header, {JSON}", actual, "json")
    if exchange.media_type != JSON:
        raise ctx.finding(exchange.route, f"Content-Type {JSON}", exchange.summary(), "json")


def reason_phrases(code: int) -> list[str]:
    """The reason phrases known for a status code, this Python's first; none for an unregistered code."""
    try:
        known = [HTTPStatus(code).phrase]
    except ValueError:
        known = []
    return [*known, *(p for p in OTHER_PHRASES.get(code, ()) if p not in known)]


def normal_phrase(phrase: str) -> str:
    return " ".join(phrase.replace("-", " ").split()).lower()


def require_envelope_body(ctx: CheckContext, exchange: Exchange) -> dict[str, Any]:
    try:
        body = exchange.json()
    except ValueError as exc:
        raise ctx.finding(exchange.route, "a JSON body", f"{exc}: {exchange.summary()}", "envelope") from None
    errors = sorted(
        jsonschema.Draft202012Validator(schema("response.schema.json")).iter_errors(body), key=str
    )
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "body"
        message = errors[0].message
        message = message if len(message) <= 200 else message[:200] + "..."
        raise ctx.finding(
            exchange.route,
            "the envelope {statusCode, status, message}",
            ctx.same_root(f"{where}: {message}"),
            "envelope",
        )
    code = body["statusCode"]
    if type(code) is not int:
        # JSON Schema's "integer" takes 200.0 too; a client that reads an integer does not.
        actual = f"statusCode {json.dumps(code)}, a number with a fraction or exponent"
        raise ctx.finding(exchange.route, "statusCode a JSON integer such as 200", actual, "envelope")
    if code != exchange.status:
        actual = f"statusCode {code}"
        raise ctx.finding(
            exchange.route, f"statusCode {exchange.status} (the HTTP status)", actual, "envelope"
        )
    phrases = reason_phrases(code)
    if phrases and normal_phrase(body["status"]) not in {normal_phrase(p) for p in phrases}:
        expected = f"status {phrases[0]!r} (the reason phrase of {code})"
        raise ctx.finding(exchange.route, expected, f"status {body['status'][:100]!r}", "envelope")
    return body  # type: ignore[no-any-return]
