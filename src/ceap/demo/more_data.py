"""The demo's data for the other batch programs: orders, delivery tracking, bookings,
KYC status, recent purchases with their co-purchase table, and community activity.

Like :mod:`ceap.demo.data`, everything comes from one seeded generator, vectorised
with numpy and pyarrow, and is dated relative to ``today`` (bookings: to midnight
UTC of ``today``), so the same seed and day give the same files. The customers are
the demo's own (``C000001`` ...), so the delivery half finds their profiles.

``bookings.csv`` holds a few rows that are bad on purpose, to show quarantine.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ceap.demo.data import COUNTRIES, COUNTRY_P, MARKETPLACE_OF, customer_ids

DELIVERED_ORDERS = "delivered_orders.parquet"
ORDER_TRACKING = "order_tracking.parquet"
BOOKINGS = "bookings.csv"
KYC_ACCOUNTS = "kyc_accounts.csv"
RECENT_PURCHASES = "recent_purchases.parquet"
CO_PURCHASES = "co_purchases.parquet"
COMMUNITY = "community_activity.parquet"
FILES = (DELIVERED_ORDERS, ORDER_TRACKING, BOOKINGS, KYC_ACCOUNTS, RECENT_PURCHASES, CO_PURCHASES,
         COMMUNITY)

#: rows of bookings.csv that are bad on purpose; one per 50 good rows at most, so that a
#: small demo stays under the appointment programs' max_bad_share
BAD_BOOKING_ROWS: list[dict[str, str | None]] = [
    {"booking_id": "B900001", "customer_id": "C900001", "appointment_at": "tomorrow 10am",
     "previous_no_shows": "0"},
    {"booking_id": "B900002", "customer_id": None, "appointment_at": None, "previous_no_shows": "1"},
    {"booking_id": "B900003", "customer_id": "C900003", "appointment_at": None,
     "previous_no_shows": "n/a"},
    {"booking_id": "B900004", "customer_id": "C900004", "appointment_at": "2025-02-30 09:00:00",
     "previous_no_shows": "2"},
]
BAD_ROWS_EVERY = 50

SERVICES = np.array(["dental check-up", "hygienist", "physiotherapy", "eye test", "haircut",
                     "car service"])
LOCATIONS = np.array(["Downtown", "Riverside", "Old Town", "Airport Park"])

#: the catalogue: anchors (what people buy first) and the accessories bought with them
ANCHORS: dict[str, tuple[str, float, list[tuple[str, str, float, float]]]] = {
    # anchor id: (name, price, [(accessory id, name, price, chance it is bought with the anchor)])
    "P-CAM": ("Mirrorless camera M50", 899.0, [
        ("P-LENS", "50 mm f/1.8 prime lens", 249.0, 0.45), ("P-SDC", "128 GB SD card", 29.0, 0.55),
        ("P-CBAG", "Camera shoulder bag", 59.0, 0.25), ("P-TRIP", "Travel tripod", 79.0, 0.18),
        ("P-CBAT", "Spare camera battery", 45.0, 0.30)]),
    "P-LAP": ("Ultrabook 14", 1199.0, [
        ("P-MOUSE", "Wireless mouse", 39.0, 0.40), ("P-SLEEVE", "Laptop sleeve", 35.0, 0.30),
        ("P-HUB", "USB-C hub", 49.0, 0.35), ("P-SSD", "1 TB external SSD", 99.0, 0.15)]),
    "P-PHONE": ("Smartphone Pro", 999.0, [
        ("P-CASE", "Phone case", 25.0, 0.60), ("P-GLASS", "Screen protector", 15.0, 0.45),
        ("P-CHRG", "Fast charger", 29.0, 0.30), ("P-BUDS", "Wireless earbuds", 149.0, 0.15)]),
    "P-ESP": ("Espresso machine", 449.0, [
        ("P-GRIND", "Burr coffee grinder", 129.0, 0.30), ("P-FROTH", "Milk frother", 49.0, 0.25),
        ("P-DESC", "Descaler", 12.0, 0.35), ("P-BEANS", "Espresso beans 1 kg", 18.0, 0.50)]),
    "P-RUN": ("Running shoes", 129.0, [
        ("P-SOCKS", "Running socks", 15.0, 0.40), ("P-WATCH", "GPS sports watch", 199.0, 0.10),
        ("P-BOTTLE", "Water bottle", 19.0, 0.25)]),
    "P-TENT": ("Two-person tent", 299.0, [
        ("P-SLEEP", "Sleeping bag", 119.0, 0.45), ("P-STOVE", "Camping stove", 69.0, 0.30),
        ("P-LAMP", "Head torch", 29.0, 0.35)]),
}
FILLERS = [("P-BOOK", "Paperback novel", 12.0), ("P-TEE", "Cotton T-shirt", 19.0),
           ("P-POT", "Plant pot", 14.0), ("P-GAME", "Board game", 34.0)]
#: co-purchase pairs seen fewer times than this are noise, not affinity
MIN_TOGETHER = 5
RECOMMENDED = 3

TRENDING: dict[str, list[tuple[str, int]]] = {
    "photography": [("Show us your best golden-hour shot", 214), ("Prime or zoom for travel?", 131),
                    ("Editing workflow for beginners", 87)],
    "running": [("Your first half marathon: what you wish you had known", 188),
                ("Winter running gear that works", 96), ("Couch to 5k check-in thread", 143)],
    "coffee": [("Dialling in a new grinder", 157), ("Best beans under $20", 122),
               ("Latte art progress thread", 99)],
    "camping": [("Lightweight packing lists", 176), ("Favourite campsites this season", 134),
                ("One-pot camp recipes", 81)],
    "gadgets": [("Which earbuds survived a year?", 201), ("USB-C everything: worth it?", 118),
                ("Desk setups of the month", 164)],
    "home office": [("Standing desk: a year later", 139), ("Quiet keyboards, ranked", 102),
                    ("How do you keep work and home apart?", 127)],
}
COMMUNITY_URL = "https://community.shop.example/t/"
TOPICS = np.array(list(TRENDING))


def _days(today: date, days_ago: np.ndarray) -> pa.Array:
    """``today - days_ago`` as an Arrow date32 array (null where ``days_ago`` is NaN)."""
    epoch_day = (today - date(1970, 1, 1)).days
    values = np.asarray(days_ago, dtype=np.float64)
    valid = ~np.isnan(values)
    ints = np.where(valid, epoch_day - np.nan_to_num(values), 0).astype(np.int32)
    return pa.array(ints, pa.int32(), mask=~valid).cast(pa.date32())


def _ids(prefix: str, n: int, start: int = 1) -> pa.Array:
    return pa.array(np.char.add(prefix, np.char.zfill(np.arange(start, start + n).astype(str), 7)),
                    pa.string())


def _timestamps_text(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` (UTC) text."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return np.char.replace(text, "T", " ")


# -- use case 0: delivered orders ------------------------------------------------
def _delivered_orders(rng: np.random.Generator, ids: np.ndarray, marketplace: np.ndarray,
                      today: date) -> pa.Table:
    n = len(ids)
    # per customer: their habits and when they were last asked for a review
    reviews_written = rng.poisson(np.where(rng.random(n) < 0.3, 4.0, 0.4))
    orders_12m = 1 + rng.poisson(3.0, n)
    app_user = rng.random(n) < 0.45
    asked = rng.random(n) < 0.35
    asked_days = np.where(asked, rng.integers(1, 120, n), np.nan)
    # orders delivered in the last 30 days
    per_customer = rng.poisson(0.6, n)
    who = np.repeat(np.arange(n), per_customer)
    m = len(who)
    delivered_days = rng.integers(0, 31, m)
    items = 1 + rng.poisson(0.8, m)
    value = np.round(rng.lognormal(np.log(45.0), 0.7, m) * np.sqrt(items), 2)
    # the longer since delivery, the likelier a review already came in
    p_reviewed = (0.05 + 0.1 * np.minimum(reviews_written[who], 5)) * np.minimum(delivered_days, 14) / 14
    reviewed = rng.random(m) < p_reviewed
    return pa.table({
        "order_id": _ids("O", m),
        "customer_id": pa.array(ids[who], pa.string()),
        "delivered_at": _days(today, delivered_days),
        "order_value": value,
        "items": items.astype(np.int64),
        "reviewed": reviewed,
        "last_review_request_at": _days(today, asked_days[who]),
        "reviews_written": reviews_written[who].astype(np.int64),
        "orders_12m": orders_12m[who].astype(np.int64),
        "app_user": app_user[who],
        "marketplace": pa.array(marketplace[who], pa.string()),
    })


# -- use case 2: delivery tracking -----------------------------------------------
def _order_tracking(rng: np.random.Generator, ids: np.ndarray, marketplace: np.ndarray,
                    today: date) -> pa.Table:
    n = len(ids)
    lifetime_value = np.round(rng.lognormal(np.log(450.0), 1.0, n), 2)
    late_before = rng.poisson(0.3, n)
    per_customer = rng.poisson(0.35, n)
    who = np.repeat(np.arange(n), per_customer)
    m = len(who)
    promised_days_ago = rng.integers(-5, 16, m)  # negative: promised for a future day
    shipped_days_ago = promised_days_ago + rng.integers(2, 6, m)
    # most orders arrive on time; one in five is stuck somewhere
    stuck = rng.random(m) < 0.2
    arrived = (promised_days_ago >= 0) & ~stuck & (rng.random(m) < 0.95)
    status = np.where(arrived, "delivered",
                      np.where(stuck & (promised_days_ago > 3), "delayed", "in_transit"))
    delivered_days = np.where(arrived, np.maximum(promised_days_ago - rng.integers(0, 2, m), 0), np.nan)
    # a late order may already have been credited by customer service
    credited = (status != "delivered") & (promised_days_ago >= 7) & (rng.random(m) < 0.25)
    return pa.table({
        "order_id": _ids("T", m),
        "customer_id": pa.array(ids[who], pa.string()),
        "carrier": pa.array(np.array(["UPS", "DHL", "FedEx", "USPS"])[rng.integers(0, 4, m)]),
        "shipped_at": _days(today, shipped_days_ago),
        "promised_at": _days(today, promised_days_ago),
        "delivered_at": _days(today, delivered_days),
        "status": pa.array(status, pa.string()),
        "order_value": np.round(rng.lognormal(np.log(80.0), 0.8, m), 2),
        "lifetime_value": lifetime_value[who],
        "late_orders_12m": late_before[who].astype(np.int64),
        "credit_issued": credited,
        "marketplace": pa.array(marketplace[who], pa.string()),
    })


# -- use case 10: bookings (CSV, with bad rows) -----------------------------------
def _bookings(rng: np.random.Generator, ids: np.ndarray, today: date) -> pa.Table:
    n = len(ids)
    booked = rng.random(n) < 0.18
    who = np.flatnonzero(booked)
    m = len(who)
    midnight = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp())
    # from yesterday to three days ahead, on quarter hours between 08:00 and 18:00
    day = rng.integers(-1, 3, m)
    slot = rng.integers(8 * 4, 18 * 4, m)
    appointment = midnight + day * 86_400 + slot * 900
    lead_days = np.minimum(rng.geometric(1 / 12, m), 90)
    booked_at = appointment - lead_days * 86_400 - rng.integers(0, 86_400, m)
    previous = rng.poisson(3.0, m)
    flaky = rng.random(m) < 0.2
    no_shows = rng.binomial(previous, np.where(flaky, 0.4, 0.04))
    cancelled = rng.random(m) < 0.06
    good = pa.table({
        "booking_id": _ids("B", m),
        "customer_id": pa.array(ids[who], pa.string()),
        "service": pa.array(SERVICES[rng.integers(0, len(SERVICES), m)]),
        "location": pa.array(LOCATIONS[rng.integers(0, len(LOCATIONS), m)]),
        "appointment_at": pa.array(_timestamps_text(appointment), pa.string()),
        "booked_at": pa.array(_timestamps_text(booked_at), pa.string()),
        "status": pa.array(np.where(cancelled, "cancelled", "booked"), pa.string()),
        "confirmed": pa.array(np.where(rng.random(m) < 0.55, "true", "false"), pa.string()),
        "previous_appointments": pa.array(previous.astype(str), pa.string()),
        "previous_no_shows": pa.array(no_shows.astype(str), pa.string()),
    })
    rows = BAD_BOOKING_ROWS[: m // BAD_ROWS_EVERY]
    fallback = str(_timestamps_text(np.array([midnight + 86_400 + 36_000]))[0])
    bad = pa.table({
        "booking_id": pa.array([r["booking_id"] for r in rows], pa.string()),
        "customer_id": pa.array([r["customer_id"] for r in rows], pa.string()),
        "service": pa.array(["physiotherapy"] * len(rows), pa.string()),
        "location": pa.array(["Downtown"] * len(rows), pa.string()),
        "appointment_at": pa.array([r["appointment_at"] or fallback for r in rows], pa.string()),
        "booked_at": pa.array([str(_timestamps_text(np.array([midnight - 86_400]))[0])] * len(rows),
                              pa.string()),
        "status": pa.array(["booked"] * len(rows), pa.string()),
        "confirmed": pa.array(["false"] * len(rows), pa.string()),
        "previous_appointments": pa.array(["4"] * len(rows), pa.string()),
        "previous_no_shows": pa.array([r["previous_no_shows"] for r in rows], pa.string()),
    })
    table = pa.concat_tables([good, bad])
    return table.take(rng.permutation(table.num_rows))


# -- use case 12: KYC status ------------------------------------------------------
def _kyc_accounts(rng: np.random.Generator, ids: np.ndarray, today: date) -> pa.Table:
    n = len(ids)
    business = rng.random(n) < 0.12
    statuses = np.array(["complete", "not_started", "documents_requested", "under_review"])
    status = statuses[rng.choice(4, n, p=[0.7, 0.12, 0.12, 0.06])]
    incomplete = status != "complete"
    # a new account has 30 days to verify; most incomplete ones are recent
    opened_days_ago = np.where(incomplete, rng.integers(5, 30, n), rng.integers(30, 2000, n))
    deadline_in = 30 - opened_days_ago
    documents_missing = np.where(status == "not_started", 2 + business,
                                 np.where(status == "documents_requested", 1 + rng.integers(0, 2, n), 0))
    completed_days_ago = np.where(incomplete, np.nan, opened_days_ago - rng.integers(1, 20, n))
    return pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "account_type": pa.array(np.where(business, "business", "personal"), pa.string()),
        "opened_at": _days(today, opened_days_ago),
        "kyc_status": pa.array(status, pa.string()),
        "kyc_deadline": _days(today, -deadline_in),
        "kyc_completed_at": _days(today, np.maximum(completed_days_ago, 0)),
        "documents_missing": documents_missing.astype(np.int64),
        "balance": np.round(rng.lognormal(np.log(1500.0), 1.2, n) * np.where(business, 8.0, 1.0), 2),
    })


# -- use case 14: recent purchases and the co-purchase table ----------------------
def _catalogue() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Product ids, names, prices, and whether each is an anchor."""
    rows: list[tuple[str, str, float, bool]] = []
    for anchor, (name, price, accessories) in ANCHORS.items():
        rows.append((anchor, name, price, True))
        rows.extend((acc, acc_name, acc_price, False) for acc, acc_name, acc_price, _ in accessories)
    rows.extend((pid, name, price, False) for pid, name, price in FILLERS)
    ids, names, prices, anchors = zip(*rows, strict=True)
    return np.array(ids), np.array(names), np.array(prices), np.array(anchors)


def _baskets(rng: np.random.Generator, orders: int, product_ids: np.ndarray) -> np.ndarray:
    """An (orders x products) matrix of what each past order held."""
    index = {p: i for i, p in enumerate(product_ids)}
    anchors = list(ANCHORS)
    held = np.zeros((orders, len(product_ids)), dtype=bool)
    has_anchor = rng.random(orders) < 0.6
    anchor = rng.integers(0, len(anchors), orders)
    for a, name in enumerate(anchors):
        mine = has_anchor & (anchor == a)
        held[mine, index[name]] = True
        for accessory, _, _, chance in ANCHORS[name][2]:
            held[:, index[accessory]] |= mine & (rng.random(orders) < chance)
    # orders without an anchor: one to three items from anywhere but the anchors
    others = np.array([i for i, p in enumerate(product_ids) if p not in ANCHORS])
    for _ in range(3):
        pick = others[rng.integers(0, len(others), orders)]
        take = ~has_anchor & (rng.random(orders) < 0.6)
        held[np.flatnonzero(take), pick[take]] = True
    filler = np.array([index[p] for p, _, _ in FILLERS])
    held[:, filler] |= rng.random((orders, len(filler))) < 0.08
    return held


def co_purchase_table(held: np.ndarray, product_ids: np.ndarray) -> pa.Table:
    """Pairs bought together at least ``MIN_TOGETHER`` times: how often (``together``),
    the share of A's orders that also held B (``confidence``, P(B | A)) and how much more
    often than B's base rate (``lift``)."""
    counts = held.T.astype(np.int64) @ held.astype(np.int64)
    alone = np.diag(counts).astype(np.float64)
    orders = max(held.shape[0], 1)
    a, b = np.nonzero((counts >= MIN_TOGETHER) & ~np.eye(len(product_ids), dtype=bool))
    confidence = counts[a, b] / np.maximum(alone[a], 1.0)
    lift = confidence / np.maximum(alone[b] / orders, 1e-9)
    return pa.table({
        "product_a": pa.array(product_ids[a], pa.string()),
        "product_b": pa.array(product_ids[b], pa.string()),
        "together": counts[a, b],
        "confidence": np.round(confidence, 4),
        "lift": np.round(lift, 3),
    })


def _recent_purchases(rng: np.random.Generator, ids: np.ndarray, marketplace: np.ndarray,
                      today: date) -> tuple[pa.Table, pa.Table]:
    n = len(ids)
    product_ids, names, prices, is_anchor = _catalogue()
    p = len(product_ids)
    orders = 3 * n
    held = _baskets(rng, orders, product_ids)
    pairs = co_purchase_table(held, product_ids)
    # the customers' past orders: what they own is never recommended back
    owner = rng.integers(0, n, orders)
    owned = np.zeros((n, p), dtype=bool)
    rows, cols = np.nonzero(held)
    owned[owner[rows], cols] = True
    # purchases of the last three days: mostly anchors, some accessories and fillers
    buys = rng.random(n) < 0.1
    who = np.flatnonzero(buys)
    m = len(who)
    anchors = np.flatnonzero(is_anchor)
    what = np.where(rng.random(m) < 0.75, anchors[rng.integers(0, len(anchors), m)],
                    rng.integers(0, p, m))
    days_ago = rng.choice([1, 1, 1, 2, 3], m)
    # P(B | A) from the co-purchase table, as a matrix; self-pairs and owned items excluded
    confidence = np.zeros((p, p))
    position = {pid: i for i, pid in enumerate(product_ids)}
    pa_idx = np.array([position[x] for x in pairs.column("product_a").to_pylist()], dtype=np.int64)
    pb_idx = np.array([position[x] for x in pairs.column("product_b").to_pylist()], dtype=np.int64)
    lift = np.zeros((p, p))
    confidence[pa_idx, pb_idx] = pairs.column("confidence").to_numpy()
    lift[pa_idx, pb_idx] = pairs.column("lift").to_numpy()
    scores = np.where((lift[what] > 1.2) & ~is_anchor[None, :] & ~owned[who], confidence[what], 0.0)
    scores[np.arange(m), what] = 0.0
    top = np.argsort(-scores, axis=1, kind="stable")[:, :RECOMMENDED]
    top_scores = np.take_along_axis(scores, top, axis=1)
    keep = top_scores > 0
    counts = keep.sum(axis=1)
    flat_items, flat_scores = top[keep], top_scores[keep]  # row-major: each row's best first
    recommendations = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)),
        pa.StructArray.from_arrays(
            [pa.array(product_ids[flat_items], pa.string()), pa.array(names[flat_items], pa.string()),
             pa.array(prices[flat_items]), pa.array(np.round(flat_scores, 4))],
            names=["product_id", "name", "price", "affinity"]))
    best = np.where(counts > 0, np.round(top_scores[:, 0], 4), np.nan)
    table = pa.table({
        "order_id": _ids("R", m),
        "customer_id": pa.array(ids[who], pa.string()),
        "product_id": pa.array(product_ids[what], pa.string()),
        "product_name": pa.array(names[what], pa.string()),
        "price": prices[what],
        "purchased_at": _days(today, days_ago),
        "affinity": pa.array(best, pa.float64(), from_pandas=True),
        "recommendations": recommendations,
        "email_clicks_90d": rng.poisson(1.2, m).astype(np.int64),
        "marketplace": pa.array(marketplace[who], pa.string()),
    })
    return table, pairs


# -- use cases 15 and 16: community activity --------------------------------------
def _trending(topic: np.ndarray) -> pa.Array:
    """Each row's three trending discussions of its topic (codes into ``TOPICS``), as a
    list of ``{title, url, replies}``."""
    per_topic = np.array([[title for title, _ in TRENDING[t]] for t in TOPICS])
    replies = np.array([[r for _, r in TRENDING[t]] for t in TOPICS])
    titles = pa.array(per_topic[topic].ravel(), pa.string())
    slugs = pc.utf8_trim(pc.replace_substring_regex(pc.utf8_lower(titles), "[^a-z0-9]+", "-"), "-")
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, (len(topic) + 1) * per_topic.shape[1], per_topic.shape[1], dtype=np.int32)),
        pa.StructArray.from_arrays([titles, pc.binary_join_element_wise(COMMUNITY_URL, slugs, ""),
                                    pa.array(replies[topic].ravel().astype(np.int64))],
                                   names=["title", "url", "replies"]))


def _community(rng: np.random.Generator, ids: np.ndarray, today: date) -> pa.Table:
    n = len(ids)
    member = rng.random(n) < 0.6
    who = np.flatnonzero(member)
    m = len(who)
    kind = rng.choice(4, m, p=[0.45, 0.2, 0.15, 0.2])  # lurker, commenter, poster, dormant
    visits = np.where(kind == 3, 0, rng.poisson(np.array([4.0, 12.0, 15.0, 0.0])[kind]))
    comments = rng.poisson(np.array([0.6, 11.0, 6.0, 0.0])[kind])
    posts = np.where(kind == 2, 1 + rng.poisson(4.0, m), 0)
    words = np.round(np.where(comments > 0, rng.lognormal(np.log(28.0), 0.6, m), 0.0), 1)
    likes = np.round(np.where(comments > 0, rng.gamma(1.5, 1.2, m), 0.0), 2)
    topic = rng.integers(0, len(TOPICS), m)
    return pa.table({
        "customer_id": pa.array(ids[who], pa.string()),
        "member_since": _days(today, rng.integers(7, 900, m)),
        "visits_30d": visits.astype(np.int64),
        "reactions_30d": rng.poisson(np.where(visits > 0, 1.0 + visits * 0.4, 0.0)).astype(np.int64),
        "comments_30d": comments.astype(np.int64),
        "posts_total": posts.astype(np.int64),
        "avg_comment_words": words,
        "likes_per_comment": likes,
        "topics_followed": (1 + rng.poisson(1.0, m)).astype(np.int64),
        "favourite_topic": pa.array(TOPICS[topic], pa.string()),
        "trending": _trending(topic),
    })


def generate_more(data_dir: Path, customers: int = 20_000, seed: int = 7,
                  today: date | None = None) -> dict[str, Path]:
    """Write the data of the review, late-order, appointment, KYC, cross-sell, community
    and user-generated-content programs into ``data_dir``; return their paths by name
    (the file name without its extension).

    The same ``customers``, ``seed`` and ``today`` always give the same rows.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    today = today or datetime.now(UTC).date()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # a stream of its own, so these files do not shift when data.generate changes
    rng = np.random.default_rng([seed, 20_141_516])
    ids = customer_ids(1, customers)
    marketplace = MARKETPLACE_OF[rng.choice(len(COUNTRIES), customers, p=COUNTRY_P)]

    purchases, pairs = _recent_purchases(rng, ids, marketplace, today)
    tables: dict[str, pa.Table] = {
        DELIVERED_ORDERS: _delivered_orders(rng, ids, marketplace, today),
        ORDER_TRACKING: _order_tracking(rng, ids, marketplace, today),
        BOOKINGS: _bookings(rng, ids, today),
        KYC_ACCOUNTS: _kyc_accounts(rng, ids, today),
        RECENT_PURCHASES: purchases,
        CO_PURCHASES: pairs,
        COMMUNITY: _community(rng, ids, today),
    }
    paths = {}
    for name, table in tables.items():
        path = data_dir / name
        if name.endswith(".csv"):
            pacsv.write_csv(table, path)
        else:
            pq.write_table(table, path)
        paths[Path(name).stem] = path
    return paths
