"""The seed service's Shopify hot path, rebuilt as a well-tuned comparator for hookgate.

Issue 3 states hookgate's throughput floor as a multiple of the Python service it
replaces, and this machine's speed swings from day to day, so the baseline has to be
measured in the same run as hookgate. This file reproduces what the seed did per webhook
(HMAC check, Redis SET NX, a PostgreSQL insert and commit, a JetStream publish awaiting its
ack, a status update and a second commit) with the fastest ordinary choices of that stack:
uvloop, httptools, asyncpg, redis.asyncio, nats-py and orjson, and no per-request logging.

Configuration comes from the environment (see README.md); `hookgate-load --mode seed`
sets all of it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import uuid
from datetime import datetime, timezone

import asyncpg
import nats
import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import Response
from nats.js.api import StorageType
from nats.js.errors import BadRequestError

SECRET = os.environ.get("SHOPIFY_WEBHOOK_SECRET", "").encode()
DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://root@127.0.0.1:5432/test")
SCHEMA = os.environ.get("SEED_SCHEMA", "seed_bench")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
STREAM = os.environ.get("SEED_STREAM", "SEEDBENCH")
SUBJECT_PREFIX = os.environ.get("SEED_SUBJECT_PREFIX", "seedbench")
DEDUP_TTL = int(float(os.environ.get("DEDUP_TTL_HOURS", "24")) * 3600)
# Per worker: the load's 64 connections are split over the workers, and more PostgreSQL
# connections than in-flight requests only cost memory on a 2-core machine.
PG_POOL_SIZE = int(os.environ.get("SEED_PG_POOL_SIZE", "24"))
REDIS_POOL_SIZE = int(os.environ.get("SEED_REDIS_POOL_SIZE", "48"))
# The load tool waits for one file per worker here, so that no measured request lands in
# a backlog that only one worker is draining.
READY_DIR = os.environ.get("SEED_READY_DIR")

if not SCHEMA.replace("_", "").isalnum():
    raise SystemExit(f"SEED_SCHEMA must be a plain identifier, got {SCHEMA!r}")

# The seed's ShopifyWebhookHandler table, for the topics the load sends and their kin.
EVENT_TYPES = {
    "orders/create": "order.created",
    "orders/updated": "order.updated",
    "orders/paid": "order.paid",
    "orders/cancelled": "order.cancelled",
    "orders/fulfilled": "order.fulfilled",
    "products/create": "product.created",
    "products/update": "product.updated",
    "products/delete": "product.deleted",
    "customers/create": "customer.created",
    "customers/update": "customer.updated",
    "inventory_levels/update": "inventory.updated",
    "app/uninstalled": "app.uninstalled",
}

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.webhook_entries (
    id uuid PRIMARY KEY,
    source text NOT NULL,
    topic text NOT NULL,
    idempotency_key text NOT NULL,
    headers jsonb NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL,
    correlation_id text,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS webhook_entries_source_key
    ON {SCHEMA}.webhook_entries (source, idempotency_key);
CREATE INDEX IF NOT EXISTS webhook_entries_status ON {SCHEMA}.webhook_entries (status);
CREATE INDEX IF NOT EXISTS webhook_entries_received_at
    ON {SCHEMA}.webhook_entries (received_at);
"""

INSERT = f"""
INSERT INTO {SCHEMA}.webhook_entries
    (id, source, topic, idempotency_key, headers, payload, status, correlation_id)
VALUES ($1, 'shopify', $2, $3, $4, $5, 'received', $6)
"""

MARK = f"UPDATE {SCHEMA}.webhook_entries SET status = $2, processed_at = now() WHERE id = $1"


def json_response(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Stack:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    nc: nats.NATS
    js: nats.js.JetStreamContext
    handled = 0


stack = Stack()


async def create_schema(pool: asyncpg.Pool) -> None:
    # Both workers start at once; CREATE ... IF NOT EXISTS is not safe against a
    # concurrent twin (it can fail on the catalog's unique index), so they take turns.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hookgate-seed-bench-ddl'))")
        await conn.execute(DDL)


async def create_stream(js: nats.js.JetStreamContext) -> None:
    try:
        await js.add_stream(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            duplicate_window=600,
        )
    except BadRequestError:
        # The other worker created it first with the same config (or it is left from an
        # earlier run): fine as long as it exists.
        await js.stream_info(STREAM)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    stack.pool = await asyncpg.create_pool(
        DATABASE_URL, min_size=min(8, PG_POOL_SIZE), max_size=PG_POOL_SIZE
    )
    await create_schema(stack.pool)
    # Blocking: the plain pool raises once its size is reached, and the kernel need not
    # deal the load's connections evenly between the workers.
    stack.redis = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            REDIS_URL, max_connections=REDIS_POOL_SIZE
        )
    )
    await stack.redis.ping()
    stack.nc = await nats.connect(NATS_URL)
    stack.js = stack.nc.jetstream()
    await create_stream(stack.js)
    if READY_DIR:
        with open(os.path.join(READY_DIR, str(os.getpid())), "w"):
            pass
    yield
    if READY_DIR:
        # How the load was dealt between the workers, for the load tool's report.
        with open(os.path.join(READY_DIR, f"{os.getpid()}.handled"), "w") as file:
            file.write(str(stack.handled))
    with contextlib.suppress(Exception):
        await stack.nc.drain()
    with contextlib.suppress(Exception):
        await stack.redis.aclose()
    with contextlib.suppress(Exception):
        await stack.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/api/v1/health/ready")
async def ready() -> Response:
    return json_response({"status": "ready", "pid": os.getpid()})


# hookgate's route writes the topic with '-' for '/' (orders-create); the seed's took it
# with slashes. Both are served.
@app.post("/api/v1/webhooks/shopify/{topic:path}")
async def shopify_webhook(topic: str, request: Request) -> Response:
    stack.handled += 1
    body = await request.body()
    headers = request.headers

    given = headers.get("x-shopify-hmac-sha256", "")
    expected = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(given, expected):
        return json_response({"status": "error", "detail": "invalid signature"}, 401)

    webhook_id = headers.get("x-shopify-webhook-id")
    if not webhook_id:
        return json_response({"status": "error", "detail": "missing webhook id"}, 400)
    key = f"webhook:dedup:shopify:{webhook_id}"
    if not await stack.redis.set(key, b"1", nx=True, ex=DEDUP_TTL):
        return json_response({"status": "duplicate"})

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return json_response({"status": "error", "detail": "invalid json"}, 400)

    topic = topic.replace("-", "/")
    entry_id = uuid.uuid4()
    correlation_id = headers.get("x-correlation-id") or str(uuid.uuid4())
    try:
        # The raw body goes in as the jsonb text: PostgreSQL parses it either way, and
        # re-serialising the parsed dict would only add Python time.
        await stack.pool.execute(
            INSERT,
            entry_id,
            topic,
            webhook_id,
            orjson.dumps(dict(headers.items())).decode(),
            body.decode(),
            correlation_id,
        )
    except asyncpg.UniqueViolationError:
        return json_response({"status": "duplicate"})

    event_type = EVENT_TYPES.get(topic, "shopify." + topic.replace("/", "."))
    event_id = str(uuid.uuid4())
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "source": "shopify",
        "correlation_id": correlation_id,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "metadata": {
            "topic": topic,
            "shop_domain": headers.get("x-shopify-shop-domain"),
            "webhook_id": webhook_id,
        },
        "data": payload,
    }
    try:
        await stack.js.publish(
            f"{SUBJECT_PREFIX}.shopify.{event_type}",
            orjson.dumps(event),
            headers={"Nats-Msg-Id": event_id},
        )
    except Exception:
        # The seed kept the row for replay and let the sender retry: the Redis key must go,
        # or Shopify's retry would be taken for a duplicate.
        await stack.pool.execute(MARK, entry_id, "failed")
        await stack.redis.delete(key)
        return json_response({"status": "error", "detail": "publish failed"}, 503)

    await stack.pool.execute(MARK, entry_id, "processed")
    return json_response({"status": "accepted", "id": str(entry_id)})


if __name__ == "__main__":
    # For a quick manual run; the benchmark starts uvicorn itself with its options.
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8012, loop="uvloop", http="httptools")
