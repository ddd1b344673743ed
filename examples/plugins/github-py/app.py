"""hookgate source plugin for GitHub webhooks, in Python.

Checks X-Hub-Signature-256 (HMAC-SHA256 of the raw body, checked by the host: the secret
never enters the sandbox) and maps each delivery to one domain event named after the
event and its action (`pull_request.opened`, `push`); `ping` is answered as a handshake.
It behaves like the bundled Rust plugin (plugins/github) and passes the same fixtures.

Built with componentize-py (see build.sh): the class `WitWorld` implements the world
`source-plugin`; a `result` error is raised as `Err(value)`.
"""

import json
import re
from typing import List, Optional, Tuple
from urllib.parse import parse_qs

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    DomainEvent,
    Handshake,
    MapError_MalformedPayload,
    MapError_MissingField,
    MapError_UnsupportedTopic,
    MapOutcome,
    MapOutcome_Events,
    MapOutcome_Respond,
    Mapping,
    MessagePart_Body,
    Metadata,
    Request,
    SecretEncoding_Raw,
    Verified,
    VerifyError_MalformedSignature,
    VerifyError_MissingSignature,
    VerifyError_Mismatch,
)

SIGNATURE_PREFIX = "sha256="
MAC_HEX = re.compile(r"[0-9a-fA-F]{64}")
# GitHub's event names and actions: lower-case words joined by `_`, usable in a subject.
TOKEN = re.compile(r"[a-z0-9_-]+")

Settings = List[Tuple[str, str]]


class Payload:
    """The delivery's JSON object, or why there is none."""

    def __init__(self, value=None, form_json=None, error=None):
        self.value = value
        self.form_json = form_json
        self.error = error


# One instance serves one webhook (tenant-hint, verify, map) and is then thrown away, so
# the parsed body is kept between the calls: it is read and parsed once, not twice.
_parsed: Optional[Payload] = None


def _parse(request: Request) -> Payload:
    try:
        text = request.body().decode("utf-8")
    except UnicodeDecodeError as e:
        return Payload(error=f"body is not UTF-8: {e}")
    form_json = None
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        # GitHub sends the JSON payload as the form field `payload`.
        fields = parse_qs(text, keep_blank_values=True).get("payload", [])
        if not fields:
            return Payload(error="no payload form field")
        if len(fields) > 1:
            return Payload(error="the form has more than one payload field")
        text = form_json = fields[0]
    try:
        value = json.loads(text)
    except ValueError as e:
        return Payload(error=f"body is not JSON: {e}")
    if not isinstance(value, dict):
        return Payload(error="body is not a JSON object")
    return Payload(value=value, form_json=form_json)


def _payload(request: Request) -> Payload:
    global _parsed
    if _parsed is None:
        _parsed = _parse(request)
    return _parsed


def _text(obj, name: str) -> Optional[str]:
    v = obj.get(name) if isinstance(obj, dict) else None
    return v if isinstance(v, str) and v else None


def _id(obj, name: str) -> Optional[str]:
    """An id as text: Python's json keeps every digit of an integer."""
    v = obj.get(name) if isinstance(obj, dict) else None
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return str(v)
    return v if isinstance(v, str) and v else None


def _tenant(value: dict) -> Optional[str]:
    return _text(value.get("repository"), "full_name") or _text(value.get("organization"), "login")


def _subject(event: str, value: dict) -> Optional[str]:
    if event in ("pull_request", "pull_request_review", "pull_request_review_comment",
                 "pull_request_review_thread"):
        found = _id(value.get("pull_request"), "number") or _id(value, "number")
    elif event in ("issues", "issue_comment"):
        found = _id(value.get("issue"), "number")
    elif event in ("discussion", "discussion_comment"):
        found = _id(value.get("discussion"), "number")
    elif event in ("push", "create", "delete"):
        found = _text(value, "ref")
    elif event == "repository":
        found = None
    else:
        obj = value.get(event)
        found = _id(obj, "number") or _id(obj, "id")
    return found or _text(value.get("repository"), "full_name")


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> Metadata:
        # A delivery can be redelivered by hand for three days, same X-GitHub-Delivery.
        return Metadata(
            name="github-py",
            version="0.1.0",
            description="GitHub webhooks in Python (X-Hub-Signature-256, HMAC-SHA256 of the raw body)",
            retry_window_hours=72,
        )

    def tenant_hint(self, request: Request, settings: Settings) -> Optional[str]:
        payload = _payload(request)
        return None if payload.error else _tenant(payload.value)

    def verify(self, request: Request, secrets: List[int], keys: List[int], settings: Settings) -> Verified:
        header = (request.header("x-hub-signature-256") or "").strip()
        if not header:
            # The SHA-1 X-Hub-Signature is never trusted, not even as a fallback.
            if request.header("x-hub-signature") is not None:
                raise Err(VerifyError_MissingSignature(
                    "only the SHA-1 X-Hub-Signature is present; X-Hub-Signature-256 is required"))
            raise Err(VerifyError_MissingSignature("no X-Hub-Signature-256 header (has the webhook a secret?)"))
        if not header.startswith(SIGNATURE_PREFIX):
            raise Err(VerifyError_MalformedSignature(f"X-Hub-Signature-256 does not start with {SIGNATURE_PREFIX}"))
        digits = header[len(SIGNATURE_PREFIX):]
        if not MAC_HEX.fullmatch(digits):
            raise Err(VerifyError_MalformedSignature("X-Hub-Signature-256 is not sha256= and 64 hex digits"))
        # The host computes the HMAC over the body it holds: the body is not copied in for it.
        matched = host.hmac_verify(secrets, SecretEncoding_Raw(), host.HashAlgorithm.SHA256,
                                   [MessagePart_Body()], [bytes.fromhex(digits)])
        if matched is None:
            raise Err(VerifyError_Mismatch("no configured secret signs this body"))
        return Verified(secret=matched, key=None)

    def map(self, request: Request, settings: Settings) -> MapOutcome:
        event = (request.header("x-github-event") or "").strip()
        if not event:
            raise Err(MapError_MissingField("X-GitHub-Event header"))
        if not TOKEN.fullmatch(event):
            raise Err(MapError_UnsupportedTopic(f"{event!r} is not a GitHub event name"))
        # Sent once when a webhook is created, to check the endpoint: nothing to store.
        if event == "ping":
            return MapOutcome_Respond(Handshake(status=200, content_type="application/json",
                                               headers=[], body=b'{"ok":true}'))
        payload = _payload(request)
        if payload.error:
            raise Err(MapError_MalformedPayload(payload.error))
        value = payload.value
        action = value.get("action")
        event_type = event
        if action is not None:
            if not isinstance(action, str):
                raise Err(MapError_MalformedPayload("action is not a string"))
            if not TOKEN.fullmatch(action):
                raise Err(MapError_UnsupportedTopic(f"{action!r} is not a GitHub action"))
            event_type = f"{event}.{action}"
        delivery = (request.header("x-github-delivery") or "").strip() or None
        if delivery is None:
            host.log(host.LogLevel.WARN, "no X-GitHub-Delivery header: deduplicating on the body")
        return MapOutcome_Events(Mapping(
            idempotency_key=delivery,
            tenant=_tenant(value),
            topic=event,
            # GitHub sends no delivery timestamp: the time received stands in.
            occurred_at=None,
            # A form-encoded delivery's event data is its `payload` field; a JSON body is
            # published as it is (none).
            events=[DomainEvent(event_type=event_type, subject=_subject(event, value),
                                data=payload.form_json)],
        ))
