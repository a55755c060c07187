"""Candidates in DynamoDB, with native TTL: the serving side of a mixed store.

Layout (one table, on-demand capacity): partition key ``pk`` =
``tenant#customer``, sort key ``sk`` = the dedup key, so "a customer's
candidates" is one Query and the dedup key is unique per tenant (it holds the
customer). Every column of ``CANDIDATE_SCHEMA`` is an attribute of the same
name (nulls left out; timestamps as fixed-width UTC text, JSON columns as
text), so a column added to the schema flows through. ``ttl`` (epoch seconds of
``expires_at``) drives DynamoDB's own expiry; held-out candidates get none
(they are the control group). ``id`` is derived from (tenant, dedup key).

Writes go in transactions of up to 100 conditional puts
(``attribute_not_exists``): an existing dedup key is a duplicate and changes
nothing. This store serves ``write_run``'s candidates, ``candidates()`` (the
serving API, the CLI) and ``sweep_expired``; runs, quarantine, the inbox,
high-water marks and every transaction of the delivery outbox stay on the SQL
store it is paired with (see ``ceap.store.split``).

URL: ``dynamodb://TABLE?region=eu-west-1`` (``endpoint_url=`` for DynamoDB
Local or another endpoint); credentials from the environment or the default
AWS chain, never from the URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlparse

import pyarrow as pa

from ceap.errors import PluginError
from ceap.model import Candidate, CandidateQuery, WriteResult, utcnow
from ceap.store.base import Store, StoreConfig
from ceap.store.schema import CANDIDATE_SCHEMA, JSON_COLUMNS, from_iso, loads, to_iso

_SERVABLE = ("pending", "dispatched", "sent")
_KEYS = ("tenant_id", "customer_id", "dedup_key")


class DynamoDbStoreConfig(StoreConfig):
    type: Literal["dynamodb"] = "dynamodb"


def candidate_id(tenant_id: str, dedup_key: str) -> int:
    """A stable positive 63-bit id for a candidate (DynamoDB has no sequences)."""
    digest = hashlib.blake2b(f"{tenant_id}\0{dedup_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _to_attribute(kind: pa.DataType, value: Any) -> Any:
    if pa.types.is_timestamp(kind):
        return to_iso(value)
    if pa.types.is_floating(kind):
        return Decimal(repr(float(value)))
    return value


def _from_attribute(kind: pa.DataType, value: Any) -> Any:
    if pa.types.is_timestamp(kind):
        return from_iso(value)
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_integer(kind):
        return int(value)
    return value


class DynamoDbStore(Store[DynamoDbStoreConfig]):
    """Candidates only; pair it with a SQL store (``candidate_store`` in ceap.yaml)."""

    config_model: ClassVar[type[StoreConfig]] = DynamoDbStoreConfig
    remote_reads: ClassVar[bool] = True
    schemes: ClassVar[tuple[str, ...]] = ("dynamodb",)

    def __init__(self, config: DynamoDbStoreConfig, context: Any = None):
        super().__init__(config, context)
        parsed = urlparse(config.url)
        if parsed.username or parsed.password:
            raise PluginError("store URL: credentials do not belong in a dynamodb:// URL; they "
                              "come from the environment or the default AWS chain")
        self.table = parsed.netloc or parsed.path.lstrip("/")
        if not self.table:
            raise PluginError("store URL: dynamodb://TABLE needs a table name")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = sorted(set(query) - {"region", "endpoint_url"})
        if unknown:
            raise PluginError(f"store URL: unknown dynamodb:// option {unknown[0]!r} "
                              "(known: region, endpoint_url)")
        try:
            import boto3
            from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
        except ImportError:
            raise PluginError("the dynamodb store needs boto3: pip install 'ceap[dynamodb]'") from None
        self._client = boto3.client("dynamodb", region_name=query.get("region"),
                                    endpoint_url=query.get("endpoint_url"))
        self._ser, self._de = TypeSerializer(), TypeDeserializer()

    # -- schema -----------------------------------------------------------------
    def migrate(self) -> None:
        """Create the table (on demand) and switch TTL on, if not done yet."""
        client = self._client
        try:
            client.describe_table(TableName=self.table)
        except client.exceptions.ResourceNotFoundException:
            client.create_table(
                TableName=self.table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                           {"AttributeName": "sk", "KeyType": "RANGE"}])
            client.get_waiter("table_exists").wait(TableName=self.table)
        ttl = client.describe_time_to_live(TableName=self.table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(TableName=self.table, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": "ttl"})

    # -- writes -----------------------------------------------------------------
    def items(self, candidates: pa.Table) -> list[dict[str, Any]]:
        """The DynamoDB items of a candidate table (``CANDIDATE_SCHEMA``), first of each key."""
        fields = [f for f in CANDIDATE_SCHEMA if f.name in candidates.column_names]
        rows = candidates.select([f.name for f in fields]).to_pylist()
        seen: set[tuple[str, str]] = set()
        items = []
        for i, row in enumerate(rows):
            missing = [k for k in _KEYS if not row.get(k)]
            if missing:
                raise PluginError(f"candidate row {i}: {missing[0]} is empty (needed for the "
                                  "DynamoDB key)")
            key = (f"{row['tenant_id']}#{row['customer_id']}", row["dedup_key"])
            if key in seen:
                continue
            seen.add(key)
            item: dict[str, Any] = {"pk": key[0], "sk": key[1],
                                    "id": candidate_id(row["tenant_id"], row["dedup_key"])}
            for f in fields:
                if row[f.name] is not None:
                    item[f.name] = _to_attribute(f.type, row[f.name])
            if not row.get("holdout") and row.get("expires_at") is not None:
                item["ttl"] = int(row["expires_at"].timestamp())
            items.append(item)
        return items

    def put_new(self, candidates: pa.Table) -> list[dict[str, Any]]:
        """Put the candidates whose dedup key is new; return the items put.

        Transactions of up to 100 conditional puts; a transaction cancelled for keys that
        exist is retried without them."""
        put: list[dict[str, Any]] = []
        items = self.items(candidates)
        for start in range(0, len(items), 100):
            pending = items[start:start + 100]
            while pending:
                try:
                    self._client.transact_write_items(TransactItems=[
                        {"Put": {"TableName": self.table, "Item": self._encode(item),
                                 "ConditionExpression": "attribute_not_exists(pk)"}}
                        for item in pending])
                except self._client.exceptions.TransactionCanceledException as exc:
                    reasons = exc.response.get("CancellationReasons") or []
                    codes = [r.get("Code") for r in reasons]
                    if len(codes) != len(pending) or not any(c == "ConditionalCheckFailed"
                                                             for c in codes):
                        raise
                    pending = [it for it, c in zip(pending, codes, strict=True)
                               if c != "ConditionalCheckFailed"]
                    continue
                put.extend(pending)
                pending = []
        return put

    def delete(self, items: list[dict[str, Any]]) -> None:
        """Delete items by key (undoing ``put_new`` when the paired SQL write fails)."""
        for start in range(0, len(items), 25):
            requests = [{"DeleteRequest": {"Key": {"pk": {"S": it["pk"]}, "sk": {"S": it["sk"]}}}}
                        for it in items[start:start + 25]]
            while requests:
                answer = self._client.batch_write_item(RequestItems={self.table: requests})
                requests = answer.get("UnprocessedItems", {}).get(self.table, [])

    def delete_customer(self, tenant_id: str, customer_id: str) -> int:
        """Delete every item of a customer (its partition key), for ``ceap customer delete``;
        returns how many were deleted."""
        keys = [{"pk": it["pk"], "sk": it["sk"]} for it in self._pages(
            "query", KeyConditionExpression="pk = :pk", ProjectionExpression="pk, sk",
            ExpressionAttributeValues=self._encode({":pk": f"{tenant_id}#{customer_id}"}))]
        self.delete(keys)
        return len(keys)

    def write_candidates(self, candidates: pa.Table) -> WriteResult:
        put = self.put_new(candidates)
        return WriteResult(len(put), candidates.num_rows - len(put))

    def _encode(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(v) for k, v in item.items()}

    def _decode(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._de.deserialize(v) for k, v in item.items()}

    # -- reads ------------------------------------------------------------------
    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator(operation)
        for page in paginator.paginate(TableName=self.table, **kwargs):
            for item in page.get("Items", []):
                yield self._decode(item)

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        now = to_iso(utcnow())
        conditions = ["tenant_id = :tenant"]
        values: dict[str, Any] = {":tenant": query.tenant_id}
        for column in ("program", "status"):
            value = getattr(query, column)
            if value is not None:
                conditions.append(f"#{column} = :{column}")
                values[f":{column}"] = value
        if query.channel is not None:
            conditions.append("contains(channels, :channel)")
            values[":channel"] = json.dumps(query.channel)
        if query.servable:
            conditions.append("#status IN (:s0, :s1, :s2) AND holdout = :false "
                              "AND not_before <= :now")
            values.update({":s0": _SERVABLE[0], ":s1": _SERVABLE[1], ":s2": _SERVABLE[2],
                           ":false": False, ":now": now})
        if not query.include_expired:
            conditions.append("expires_at > :now")
            values[":now"] = now
        names = {f"#{c}": c for c in ("program", "status") if f"#{c}" in " ".join(conditions)}
        extra: dict[str, Any] = {"FilterExpression": " AND ".join(conditions),
                                 "ExpressionAttributeValues": self._encode(values)}
        if names:
            extra["ExpressionAttributeNames"] = names
        customers = ([query.customer_id] if query.customer_id is not None
                     else list(query.customer_ids) if query.customer_ids is not None else None)
        found: list[dict[str, Any]] = []
        if customers is None:  # no customer: a scan (the CLI's listing; not the serving path)
            found.extend(self._pages("scan", **extra))
        else:
            def one(customer: str) -> list[dict[str, Any]]:
                key_values = {**values, ":pk": f"{query.tenant_id}#{customer}"}
                return list(self._pages(
                    "query", KeyConditionExpression="pk = :pk",
                    **{**extra, "ExpressionAttributeValues": self._encode(key_values)}))

            unique = list(dict.fromkeys(customers))
            if len(unique) == 1:
                found.extend(one(unique[0]))
            else:  # the API's batch form: one Query per customer, several in flight
                with ThreadPoolExecutor(max_workers=min(8, len(unique))) as pool:
                    for items in pool.map(one, unique):
                        found.extend(items)
        found.sort(key=lambda it: (-int(it.get("priority", 0)), -float(it.get("score", 0)),
                                   int(it["id"])))
        return [self._candidate(it) for it in found[:query.limit]]

    def _candidate(self, item: dict[str, Any]) -> Candidate:
        values: dict[str, Any] = {"id": int(item["id"])}
        for f in CANDIDATE_SCHEMA:
            value = item.get(f.name)
            value = None if value is None else _from_attribute(f.type, value)
            values[f.name] = loads(value) if f.name in JSON_COLUMNS else value
        values["context"] = values["context"] or {}
        values["payload"] = values["payload"] or {}
        values["holdout"] = bool(values["holdout"])
        known = Candidate.__dataclass_fields__
        return Candidate(**{k: v for k, v in values.items() if k in known})

    def sweep_expired(self, now: datetime, tenant_id: str | None = None) -> int:
        """Delete expired, not held-out candidates now (DynamoDB's TTL deletes them too,
        within a day or two; reads never show an expired candidate meanwhile)."""
        conditions = ["expires_at <= :now", "holdout = :false"]
        values: dict[str, Any] = {":now": to_iso(now), ":false": False}
        if tenant_id is not None:
            conditions.append("tenant_id = :tenant")
            values[":tenant"] = tenant_id
        expired = list(self._pages("scan", FilterExpression=" AND ".join(conditions),
                                   ExpressionAttributeValues=self._encode(values),
                                   ProjectionExpression="pk, sk"))
        self.delete(expired)
        return len(expired)

    # -- not served here ----------------------------------------------------------
    def _sql_only(self, what: str) -> PluginError:
        return PluginError(f"the dynamodb store holds candidates only; {what} live in the SQL "
                           "store: set `store: sqlite:///...` or `postgresql://...` and "
                           "`candidate_store: dynamodb://...` in ceap.yaml")

    def write_run(self, run: Any, candidates: pa.Table, quarantine: pa.Table | None = None
                  ) -> WriteResult:
        raise self._sql_only("runs and quarantined rows")

    def record_run(self, run: Any) -> None:
        raise self._sql_only("runs")

    def runs(self, tenant_id: str, program: str | None = None, limit: int = 20) -> Any:
        raise self._sql_only("runs")

    def last_cursor(self, tenant_id: str, program: str) -> Any:
        raise self._sql_only("high-water marks")

    def quarantined(self, tenant_id: str, run_id: str) -> Any:
        raise self._sql_only("quarantined rows")

    def inbox_add(self, items: Any) -> Any:
        raise self._sql_only("inbox messages")

    def inbox_list(self, tenant_id: str, customer_id: str, unread_only: bool = False) -> Any:
        raise self._sql_only("inbox messages")

    def inbox_mark_read(self, tenant_id: str, customer_id: str, ids: list[int]) -> int:
        raise self._sql_only("inbox messages")

    def tx(self) -> Any:
        raise self._sql_only("deliveries, consent and the outbox")

    def close(self) -> None:
        self._client.close()
