"""The demo's event stream: seeded events for the eight real-time programs.

:func:`generate_events` writes one JSON Lines file, in the order a broker would
deliver it (event time, with a few client retries right after their original
and one event arriving hours late at the end), and the two lookup tables the
restock alert fans out through (``wishlists.parquet`` and ``searches.parquet``,
next to the events file). Each program gets realistic positives and the
negatives its filters exist for:

- app crashes (``predictive_issue_resolution``): bursts of more than 3 in a day,
  fewer, the same number spread over days, support contacts that raise the risk;
  one customer's 4th crash arrives late and is dropped, so they get no SMS;
- playbacks (``content_recommendations``): finished and abandoned titles, casual
  and heavy viewers, series that end, next titles of another genre;
- sign-ins (``suspicious_activity``): routine ones, new devices at home, own
  devices abroad, travellers, attacks (new device, foreign, often a data centre);
- profile changes (``account_takeover``): password then e-mail within 5 minutes,
  the same too slowly, e-mail changes alone;
- restocks (``restock_alert``): items with wish lists and searches, old and
  recent, an item nobody wants, a restock sent twice;
- moderation flags (``policy_violation_notice``): first offences, repeat
  offenders, low-confidence flags, the same post flagged twice;
- carts (``abandoned_cart``): over and under $50, orders placed within the hour
  (cancelling the e-mail), orders placed before the cart.
- comment replies (``comment_replies``, a digest): bursts of replies within an hour,
  single ones, replies in muted threads. Drawn with their own random generator and
  merged by time, so the other programs' events (and the retried ones) are unchanged.

Ids carry the day of ``now``: replaying the same day's stream again adds
nothing (every event is a duplicate); another day's stream is new. Customers are
the demo's (``C000001``...), so their profiles (e-mail, phone) apply; the phone
in ``password_changed`` events is the demo profile's, the phone on file.
"""

from __future__ import annotations

import heapq
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ceap.demo.data import COUNTRIES, COUNTRY_P, customer_ids

EVENTS = "events.jsonl"
WISHLISTS = "wishlists.parquet"
SEARCHES = "searches.parquet"
#: where the demo writes the stream, and where restock_alert.yaml reads the lookups
REALTIME_DIR = Path("data") / "realtime"

GENRES = ["drama", "comedy", "documentary", "thriller", "animation", "crime"]
WORDS = ["Silent", "Northern", "Last", "Golden", "Hidden", "Broken", "Wild", "Distant", "Iron", "Paper"]
NOUNS = ["Harbour", "Summer", "Signal", "Garden", "Kingdom", "Orbit", "Letters", "River", "Crown", "Tide"]
PRODUCTS = ["trail shoes", "rain jacket", "espresso machine", "headphones", "desk lamp", "backpack",
            "yoga mat", "blender", "smart watch", "camera lens", "board game", "chef's knife"]
POLICIES = ["harassment", "hate_speech", "spam", "misinformation", "graphic_content"]
PLATFORMS = ["ios", "android", "web"]
VERSIONS = {"ios": ["5.2.0", "5.1.3"], "android": ["5.2.1", "5.0.9"], "web": ["2026.11"]}
ERRORS = ["E_OOM", "E_NET_TIMEOUT", "E_RENDER", "E_DB_LOCK"]
FOREIGN = np.array(["RO", "NG", "BR", "VN", "RU", "ID", "TR", "UA"])
ITEMS = 200
CATALOGUE = 400


def _title(n: int) -> str:
    return f"The {WORDS[n % len(WORDS)]} {NOUNS[(n // len(WORDS)) % len(NOUNS)]}"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def phone_on_file(customer_id: str) -> str:
    """The demo profile's phone number (``ceap.demo.delivery.generate_profiles``)."""
    return "+1555" + str(int(customer_id[1:]) - 1).zfill(7)


class _Stream:
    """Events being written, with ids unique within the day of ``now``."""

    def __init__(self, now: datetime, rng: np.random.Generator):
        self.now = now
        self.rng = rng
        self.stamp = now.strftime("%Y%m%d")
        self.events: list[dict[str, Any]] = []
        self.late: list[dict[str, Any]] = []

    def ago(self, minutes: float) -> datetime:
        return self.now - timedelta(minutes=float(minutes))

    def add(self, kind: str, customer: str | None, ts: datetime, **attributes: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"id": f"{kind}-{self.stamp}-{len(self.events) + len(self.late):06d}",
                                 "type": kind, "ts": _iso(ts)}
        if customer is not None:
            event["customer_id"] = customer
        event["attributes"] = attributes
        self.events.append(event)
        return event

    def pick(self, ids: np.ndarray, share: float, least: int) -> list[str]:
        n = min(len(ids), max(least, round(share * len(ids))))
        return [str(c) for c in self.rng.choice(ids, n, replace=False)]

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


# -- 1. app crashes ------------------------------------------------------------------


def _crashes(s: _Stream, ids: list[str]) -> None:
    for i, customer in enumerate(ids):
        platform = PLATFORMS[int(s.rng.integers(len(PLATFORMS)))]
        version = VERSIONS[platform][int(s.rng.integers(len(VERSIONS[platform])))]
        error = ERRORS[int(s.rng.integers(len(ERRORS)))]
        attrs = {"platform": platform, "app_version": version, "error_code": error}
        if i == 0:  # 3 crashes counted; the 4th, from a phone that was offline, comes last
            for minutes in (1200.0, 1190.0, 1180.0):
                s.add("app_crash", customer, s.ago(minutes), **attrs)
            s.late.append({"customer_id": customer, "type": "app_crash", "ts": _iso(s.ago(1170)),
                           "attributes": attrs})
            continue
        count = int(s.rng.choice([1, 2, 3, 4, 5, 7], p=[0.3, 0.2, 0.15, 0.15, 0.12, 0.08]))
        last = s.uniform(30, 22 * 60)
        if i % 5 == 1:  # the same crashes spread over days: a flaky app, not a broken one
            times = [last + k * s.uniform(20 * 60, 30 * 60) for k in range(max(count, 4))]
        else:
            times = [last + (s.uniform(0, 6 * 60) if k else 0.0) for k in range(count)]
        for m in times:
            s.add("app_crash", customer, s.ago(m), **attrs)
        if s.chance(0.25):
            for _ in range(int(s.rng.integers(1, 4))):
                s.add("support_contact", customer, s.ago(s.uniform(2 * 24 * 60, 29 * 24 * 60)),
                      topic="app_problem")


# -- 4. playbacks ----------------------------------------------------------------------


def _playbacks(s: _Stream, ids: list[str]) -> None:
    for i, customer in enumerate(ids):
        favourite = GENRES[int(s.rng.integers(len(GENRES)))]
        heavy = i % 3 == 0
        count = int(s.rng.integers(3, 8)) if heavy else int(s.rng.integers(1, 4))
        times = sorted((s.uniform(10, 7 * 24 * 60) for _ in range(count - 1)), reverse=True)
        times.append(s.uniform(10, 20 * 60))  # the latest one: today
        for m in times:
            n = int(s.rng.integers(CATALOGUE))
            genre = favourite if s.chance(0.7) else GENRES[int(s.rng.integers(len(GENRES)))]
            finished = s.chance(0.75)
            attrs: dict[str, Any] = {"item_id": f"T{n:04d}", "title": _title(n), "genre": genre,
                                     "minutes": round(s.uniform(20, 130), 1),
                                     "completion": round(s.uniform(0.9, 1.0) if finished
                                                         else s.uniform(0.05, 0.85), 3)}
            if not s.chance(0.1):  # else: the last episode, nothing comes next
                nxt = (n + 1) % CATALOGUE
                attrs |= {"next_item_id": f"T{nxt:04d}", "next_title": _title(nxt),
                          "next_genre": genre if s.chance(0.7) else GENRES[int(s.rng.integers(len(GENRES)))]}
            s.add("playback_ended", customer, s.ago(m), **attrs)


# -- 5. sign-ins -------------------------------------------------------------------------


def _logins(s: _Stream, ids: list[str]) -> None:
    scenarios = ["routine", "attack", "new_device_home", "own_device_abroad", "traveller"]
    for i, customer in enumerate(ids):
        home = str(s.rng.choice(COUNTRIES, p=COUNTRY_P))
        device = f"d-{customer}-1"

        def login(minutes: float, dev: str, new: bool, country: str, ip: str = "residential",
                  customer: str = customer, home: str = home) -> None:
            s.add("login", customer, s.ago(minutes), session_id=f"s-{customer}-{int(minutes)}",
                  device_id=dev, new_device=new, country=country, home_country=home, ip_type=ip)

        for _ in range(int(s.rng.integers(1, 4))):
            login(s.uniform(60, 29 * 24 * 60), device, False, home,
                  "mobile" if s.chance(0.3) else "residential")
        scenario = scenarios[i] if i < len(scenarios) else str(
            s.rng.choice(scenarios, p=[0.7, 0.1, 0.1, 0.05, 0.05]))
        recent = s.uniform(2, 50)  # inside the alerts' 1 hour expiry when the demo dispatches
        foreign = str(s.rng.choice(FOREIGN))
        if scenario == "attack":
            for k in range(int(s.rng.integers(0, 4))):
                s.add("login_failed", customer, s.ago(recent + 1 + k), reason="bad_password")
            login(recent, f"d-{customer}-x", True, foreign, "datacenter" if s.chance(0.6) else "residential")
        elif scenario == "new_device_home":
            login(recent, f"d-{customer}-2", True, home)
        elif scenario == "own_device_abroad":
            login(recent, device, False, foreign, "mobile")
        elif scenario == "traveller":
            for day in (24, 16, 9):
                login(day * 24 * 60, device, False, str(s.rng.choice(["JP", "SG", "AU", "MX"])), "mobile")
            login(recent, f"d-{customer}-hotel", True, "GB")


# -- 6. profile changes -----------------------------------------------------------------


def _profile_changes(s: _Stream, ids: list[str]) -> None:
    for i, customer in enumerate(ids):
        kind = ("fast", "slow", "email_only")[i] if i < 3 else str(
            s.rng.choice(["fast", "slow", "email_only"], p=[0.5, 0.3, 0.2]))
        start = s.uniform(50, 55) if kind == "slow" else s.uniform(8, 55)
        if kind != "email_only":
            s.add("password_changed", customer, s.ago(start), phone=phone_on_file(customer),
                  device_id=f"d-{customer}-{'x' if kind == 'fast' else '1'}")
        gap = s.uniform(0.5, 4.7) if kind == "fast" else s.uniform(6, 45)
        s.add("email_changed", customer, s.ago(max(start - gap, 0.5)), new_device=kind == "fast",
              country=str(s.rng.choice(FOREIGN)) if kind == "fast" else "US")


# -- 9. restocks and the lookups ------------------------------------------------------


def _restocks(s: _Stream, ids: np.ndarray, folder: Path) -> dict[str, Path]:
    now = s.now.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    # a few items are popular: most interest goes to the first 30 of ITEMS
    weights = np.where(np.arange(ITEMS) < 30, 8.0, 1.0)
    weights /= weights.sum()
    wish = s.pick(ids, 0.03, 30)
    search = s.pick(ids, 0.04, 40)
    rows_w: dict[str, list[Any]] = {"customer_id": [], "item_id": [], "source": [], "interest_at": []}
    for customer in wish:
        for item in s.rng.choice(ITEMS, int(s.rng.integers(1, 4)), replace=False, p=weights):
            rows_w["customer_id"].append(customer)
            rows_w["item_id"].append(f"SKU-{item:04d}")
            rows_w["source"].append("wishlist")
            rows_w["interest_at"].append(now - timedelta(days=s.uniform(1, 200)))
    rows_s: dict[str, list[Any]] = {"customer_id": [], "item_id": [], "source": [], "interest_at": [],
                                    "searches": []}
    # the first few who wish for an item also searched for it: they get one push, not two
    both = [(c, rows_w["item_id"][rows_w["customer_id"].index(c)]) for c in wish[:5]]
    pairs = [*((c, f"SKU-{int(s.rng.choice(ITEMS, p=weights)):04d}") for c in search), *both]
    for customer, item in pairs:
        rows_s["customer_id"].append(customer)
        rows_s["item_id"].append(item)
        rows_s["source"].append("search")
        rows_s["interest_at"].append(now - timedelta(days=s.uniform(0.5, 150)))
        rows_s["searches"].append(int(s.rng.integers(1, 7)))
    folder.mkdir(parents=True, exist_ok=True)
    ts = pa.timestamp("us")
    pq.write_table(pa.table({**{k: rows_w[k] for k in ("customer_id", "item_id", "source")},
                             "interest_at": pa.array(rows_w["interest_at"], ts)}), folder / WISHLISTS)
    pq.write_table(pa.table({**{k: rows_s[k] for k in ("customer_id", "item_id", "source")},
                             "interest_at": pa.array(rows_s["interest_at"], ts),
                             "searches": pa.array(rows_s["searches"], pa.int64())}), folder / SEARCHES)
    wanted = sorted({*(item for _, item in both), *(f"SKU-{i:04d}" for i in range(0, 30, 3))})
    for item in [*wanted, f"SKU-{ITEMS + 1:04d}"]:  # the last one: nobody wished for it
        n = int(item[4:])
        event = s.add("item_restocked", None, s.ago(s.uniform(30, 20 * 60)), item_id=item,
                      item_name=PRODUCTS[n % len(PRODUCTS)].capitalize() + f" #{n}",
                      quantity=int(s.rng.integers(5, 200)))
        if item == wanted[0]:
            s.events.append(dict(event))  # the inventory system sent it twice
    return {"wishlists": folder / WISHLISTS, "searches": folder / SEARCHES}


# -- 11. moderation flags ----------------------------------------------------------------


def _flags(s: _Stream, ids: list[str]) -> None:
    for i, customer in enumerate(ids):
        count = 3 if i < 2 else int(s.rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.12, 0.08]))
        times = sorted((s.uniform(10, 12 * 24 * 60) for _ in range(count)), reverse=True)
        for k, m in enumerate(times):
            confident = i < 2 or s.chance(0.8)
            attrs = {"content_id": f"post-{customer}-{k}", "policy": str(s.rng.choice(POLICIES)),
                     "severity": str(s.rng.choice(["low", "medium", "high"], p=[0.4, 0.4, 0.2])),
                     "confidence": round(s.uniform(0.8, 1.0) if confident else s.uniform(0.3, 0.79), 3),
                     "action_taken": str(s.rng.choice(["removed", "hidden", "age_restricted"],
                                                      p=[0.6, 0.3, 0.1]))}
            s.add("content_flagged", customer, s.ago(m), **attrs)
            if s.chance(0.05):  # a second moderator flags the same post
                s.add("content_flagged", customer, s.ago(max(m - s.uniform(1, 30), 1)), **attrs)


# -- 13. carts ------------------------------------------------------------------------------


def _carts(s: _Stream, ids: list[str]) -> None:
    for i, customer in enumerate(ids):
        outcome = ("abandoned", "bought_within_the_hour", "bought_before")[i] if i < 3 else str(
            s.rng.choice(["abandoned", "bought_within_the_hour", "bought_before"], p=[0.5, 0.35, 0.15]))
        cart = f"cart-{customer}-{s.stamp}"
        start = s.uniform(90, 23 * 60)
        if outcome == "bought_before":
            s.add("order_placed", customer, s.ago(start + s.uniform(60, 5 * 24 * 60)),
                  order_id=f"ord-{customer}-0", amount=round(s.uniform(20, 150), 2))
        value = s.uniform(60, 90) if i < 3 else float(np.exp(s.rng.normal(np.log(48), 0.6)))
        items = int(s.rng.integers(1, 4))
        t = start
        for _ in range(int(s.rng.integers(1, 4))):  # minutes ago, each update after the last
            last = t
            s.add("cart_updated", customer, s.ago(t), cart_id=cart, cart_value=round(value, 2),
                  item_count=items, top_item=PRODUCTS[int(s.rng.integers(len(PRODUCTS)))])
            t -= s.uniform(2, 15)
            value *= s.uniform(1.05, 1.5)
            items += 1
        if outcome == "bought_within_the_hour":  # after the last update, within the hour of the first
            s.add("order_placed", customer, s.ago(min(start - s.uniform(5, 55), last - 1)),
                  order_id=f"ord-{customer}-1", amount=round(value, 2))


def _replies(now: datetime, stamp: str, rng: np.random.Generator, ids: list[str]) -> list[dict[str, Any]]:
    """Replies to members' comments: a burst of 1 to 6 within an hour per member, some in
    a muted thread (``comment_replies`` holds them for its hourly digest)."""
    events: list[dict[str, Any]] = []
    for customer in ids:
        start = float(rng.uniform(20, 23 * 60))  # the latest bursts are still in their hour
        thread = f"thread-{int(rng.integers(1, 40))}"
        muted = bool(rng.random() < 0.15)
        for k in range(int(rng.integers(1, 7))):
            ts = now - timedelta(minutes=start - float(rng.uniform(0, 55)))
            events.append({"id": f"comment_replied-{stamp}-{customer}-{k}", "type": "comment_replied",
                           "ts": _iso(ts), "customer_id": customer,
                           "attributes": {"reply_id": f"r-{customer}-{stamp}-{k}",
                                          "author": f"member{int(rng.integers(1, 500))}",
                                          "thread": thread, "muted": muted}})
    return sorted(events, key=lambda e: e["ts"])


# -- the file --------------------------------------------------------------------------------


def generate_events(path: str | Path, seed: int = 7, now: datetime | None = None,
                    customers: int = 20_000) -> dict[str, Any]:
    """Write the demo's event stream to ``path`` (JSON Lines) and the restock lookups
    (``wishlists.parquet``, ``searches.parquet``) beside it.

    The same ``seed``, ``now`` and ``customers`` give the same file. Returns the
    paths and counts: ``events`` (lines), ``duplicates`` (retried events) and
    ``late`` (events that arrive after the allowed lateness)."""
    path = Path(path)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    rng = np.random.default_rng(seed + 13)
    s = _Stream(now, rng)
    ids = customer_ids(1, customers)
    _crashes(s, s.pick(ids, 0.03, 40))
    _playbacks(s, s.pick(ids, 0.04, 40))
    _logins(s, s.pick(ids, 0.08, 60))
    _profile_changes(s, s.pick(ids, 0.004, 12))
    lookups = _restocks(s, ids, path.parent)
    _flags(s, s.pick(ids, 0.012, 25))
    _carts(s, s.pick(ids, 0.04, 40))

    events = sorted(s.events, key=lambda e: e["ts"])
    # client retries: the same event (same id) again, right after the original
    retried = {int(i) for i in rng.choice(len(events), max(5, len(events) // 200), replace=False)}
    stream: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        stream.append(event)
        if i in retried:
            stream.append(event)
    replies_rng = np.random.default_rng(seed + 17)
    replies = _replies(now, s.stamp, replies_rng, [str(c) for c in replies_rng.choice(
        ids, min(len(ids), max(30, len(ids) // 100)), replace=False)])
    stream = list(heapq.merge(stream, replies, key=lambda e: e["ts"]))
    for k, event in enumerate(s.late):
        stream.append({"id": f"{event['type']}-{s.stamp}-late{k}", **event})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in stream))
    duplicates = len(stream) - len(s.late) - len(replies) - len({e["id"] for e in events})
    return {"path": path, **lookups, "events": len(stream), "duplicates": duplicates, "late": len(s.late)}
