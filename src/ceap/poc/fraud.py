"""Proof of concept: fraud and account takeover on a documented synthetic login log.

No real login data set ships in a package, so ``generate`` simulates one:
users with a home country and one to three known devices log in over
``days`` days; some travel, some use a VPN, some get a new phone, some clear
their cookies (a known device then looks new), and a few change their
password or e-mail. About 0.3% of sessions are account takeovers: an attacker
logs in, mostly from a new device, often from another country or a data-centre
address, often after failed attempts, then usually changes the password and,
within five minutes, the e-mail address. Everything is seeded and vectorised;
docs/poc-fraud.md lists every rate.

``prepare`` trains LightGBM on the first 21 days and keeps the last 9 as the
program's batch; ``evaluate`` measures precision and recall at the program's
threshold against the rules of use cases 5 and 6 (new device and foreign
country; password then e-mail change within 5 minutes).

    python -m ceap.poc.fraud [--project DIR] [--seed 7] [--users 20000]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from ceap.poc.common import (
    DATA_DIR,
    MODELS_DIR,
    bool_column,
    figures_table,
    is_current,
    poc_arguments,
    predict,
    read_manifest,
    train_lightgbm,
    with_features,
    write_manifest,
)
from ceap.poc.metrics import average_precision, precision_recall

NAME = "fraud_takeover"
VERSION = 1
START = datetime(2026, 1, 1)
DAY = 86_400
TRAIN_DAYS = 21
#: the program's threshold (programs/fraud_takeover.yaml selection.threshold): low, since the
#: action is a 2FA challenge that costs a genuine user a few seconds, and a missed takeover costs
#: the account
THRESHOLD = 0.3
#: also reported, to show the trade-off
OTHER_THRESHOLDS = (0.5, 0.7)
ROUNDS = 200

HISTORY = DATA_DIR / "login_history.parquet"  # days 0-20, labelled: the training set
SESSIONS = DATA_DIR / "login_sessions.parquet"  # days 21-29, unlabelled: the program's source
OUTCOMES = DATA_DIR / "login_outcomes.parquet"  # which of those sessions were takeovers
MODEL = MODELS_DIR / "fraud_takeover.txt"
MANIFEST = DATA_DIR / "fraud_takeover.json"

COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "CA", "ES", "IT", "NL", "MX", "JP", "AU", "PL",
             "SE", "RU", "NG", "VN", "CN", "RO", "UA", "ID", "TR", "PH"]
#: where users live (the last nine countries host no users here)
HOME_SHARE = np.array([30, 10, 9, 8, 9, 7, 5, 4, 4, 3, 4, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                      dtype=np.float64)
#: where trips go
TRAVEL_SHARE = np.array([14, 10, 8, 12, 4, 3, 5, 12, 10, 5, 6, 4, 3, 2, 2, 0, 0, 1, 0, 0, 0, 2, 5, 1],
                        dtype=np.float64)
#: where attackers' connections come from (when they do not proxy through the victim's country)
ATTACK_SHARE = np.array([8, 2, 2, 1, 3, 6, 1, 1, 1, 6, 1, 0, 0, 1, 0, 12, 10, 9, 9, 8, 7, 6, 4, 2],
                        dtype=np.float64)
#: local hour of legitimate logins (attackers log in at any hour)
HOUR_SHARE = np.array([2, 1, 1, 1, 1, 2, 4, 6, 7, 6, 5, 5, 6, 5, 5, 5, 5, 6, 7, 8, 8, 7, 5, 3],
                      dtype=np.float64)


@dataclass(frozen=True)
class Simulation:
    """The generator's knobs; docs/poc-fraud.md explains each."""

    users: int = 20_000
    days: int = 30
    fraud_rate: float = 0.003  # share of all sessions that are takeovers
    logins_per_day: float = 0.45  # median user's rate (log-normal across users, sigma 0.8)
    traveller_share: float = 0.10  # users with one trip abroad in the window
    travel_device_share: float = 0.3  # trips on which a hotel or borrowed device is used
    vpn_share: float = 0.04  # users who sometimes connect through a VPN ...
    vpn_session_share: float = 0.3  # ... on this share of their sessions
    new_phone_share: float = 0.06  # users who switch to a new phone in the window
    cookie_reset_rate: float = 0.03  # legitimate sessions whose device fingerprint is new
    password_change_rate: float = 0.003  # legitimate sessions that change the password
    email_change_rate: float = 0.0015  # legitimate sessions that change the e-mail address
    phone_change_rate: float = 0.001  # legitimate sessions that change the phone number
    email_after_password_share: float = 0.08  # legit password changes followed by e-mail < 5 min
    recovery_share: float = 0.6  # victims who reset their password at their next login


#: SQL features over the session columns; programs/fraud_takeover.yaml carries the same ones
FEATURES: dict[str, str] = {
    "foreign_country": "country <> home_country",
    "country_changed": "country <> previous_country",
    "datacenter_ip": "ip_type = 'datacenter'",
    "mobile_ip": "ip_type = 'mobile'",
    "night_login": "local_hour < 6",
    "password_changed": "password_changed_at IS NOT NULL",
    "email_changed": "email_changed_at IS NOT NULL",
    "phone_changed": "phone_changed_at IS NOT NULL",
    "password_then_email_within_5m": (
        "coalesce(email_changed_at BETWEEN password_changed_at "
        "AND password_changed_at + INTERVAL 5 MINUTE, false)"),
    "minutes_to_first_change": (
        "date_diff('second', login_at, least(password_changed_at, email_changed_at, "
        "phone_changed_at)) / 60.0"),
}
MODEL_FEATURES = ["new_device", "failed_logins_1h", "local_hour", *FEATURES]
#: the program's filter: a session with none of these signals is not scored
RISK_SIGNAL = ("new_device OR country_changed OR foreign_country OR datacenter_ip "
               "OR failed_logins_1h > 0 OR password_changed OR email_changed OR phone_changed")
#: the rules-only baseline: use case 5's rule, or use case 6's
RULE_LOGIN = "new_device AND foreign_country"
RULE_TAKEOVER = "password_then_email_within_5m"


def _ids(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    return pa.array(np.char.add(prefix, np.char.zfill(values.astype(str), width)))


def generate(sim: Simulation = Simulation(), seed: int = 7) -> pa.Table:
    """The simulated login sessions, one row each, sorted by customer and time."""
    rng = np.random.default_rng(seed)
    n, horizon = sim.users, sim.days * DAY
    home = rng.choice(len(COUNTRIES), n, p=HOME_SHARE / HOME_SHARE.sum())
    rate = np.clip(rng.lognormal(np.log(sim.logins_per_day), 0.8, n), 0.03, 8.0)
    known = 1 + rng.binomial(2, 0.35, n)  # devices user*10 + 0..known-1 were seen before
    traveller = rng.random(n) < sim.traveller_share
    trip_start = rng.uniform(0, horizon - 2 * DAY, n)
    trip_end = trip_start + rng.uniform(2, 10, n) * DAY
    travel_p = TRAVEL_SHARE / TRAVEL_SHARE.sum()
    destination = rng.choice(len(COUNTRIES), n, p=travel_p)
    clash = destination == home
    destination[clash] = (destination[clash] + 1 + rng.integers(0, 10, clash.sum())) % 15
    travel_device = traveller & (rng.random(n) < sim.travel_device_share)
    vpn_user = rng.random(n) < sim.vpn_share
    new_phone = rng.random(n) < sim.new_phone_share
    phone_day = rng.uniform(0, horizon, n)

    # -- legitimate sessions --------------------------------------------------------------------
    per_user = 1 + rng.poisson(rate * sim.days)
    user = np.repeat(np.arange(n), per_user)
    s = user.size
    hour = rng.choice(24, s, p=HOUR_SHARE / HOUR_SHARE.sum())
    t = rng.integers(0, sim.days, s) * DAY + hour * 3600 + rng.uniform(0, 3600, s)
    device = user * 10 + (rng.random(s) * known[user]).astype(np.int64)
    switched = new_phone[user] & (t > phone_day[user]) & (rng.random(s) < 0.85)
    device[switched] = user[switched] * 10 + 5
    abroad = traveller[user] & (t >= trip_start[user]) & (t < trip_end[user])
    country = np.where(abroad, destination[user], home[user])
    hotel = abroad & travel_device[user] & (rng.random(s) < 0.5)
    device[hotel] = user[hotel] * 10 + 7
    vpn = vpn_user[user] & (rng.random(s) < sim.vpn_session_share)
    country[vpn] = rng.integers(0, len(COUNTRIES), vpn.sum())
    fresh = rng.random(s) < sim.cookie_reset_rate
    device[fresh] = 10**9 + np.flatnonzero(fresh)
    ip = rng.choice(3, s, p=[0.68, 0.30, 0.02])  # residential, mobile, data centre
    ip[vpn] = 2
    failed = rng.poisson(0.06, s)
    pw = rng.random(s) < sim.password_change_rate
    email = rng.random(s) < sim.email_change_rate
    phone = rng.random(s) < sim.phone_change_rate
    pw_delay = rng.uniform(30, 1800, s)
    email_delay = rng.uniform(60, 3 * 3600, s)
    quick = pw & (rng.random(s) < sim.email_after_password_share)
    email |= quick
    email_delay[quick] = pw_delay[quick] + rng.uniform(20, 290, quick.sum())
    fraud = np.zeros(s, dtype=bool)

    # -- account takeovers ----------------------------------------------------------------------
    f = round(sim.fraud_rate / (1 - sim.fraud_rate) * s)
    victim = rng.integers(0, n, f)
    f_hour = rng.integers(0, 24, f)
    f_t = rng.integers(0, sim.days, f) * DAY + f_hour * 3600 + rng.uniform(0, 3600, f)
    f_device = np.where(rng.random(f) < 0.9, 2 * 10**9 + np.arange(f),
                        victim * 10 + (rng.random(f) * known[victim]).astype(np.int64))
    f_country = np.where(rng.random(f) < 0.6,
                         rng.choice(len(COUNTRIES), f, p=ATTACK_SHARE / ATTACK_SHARE.sum()),
                         home[victim])
    f_ip = rng.choice(3, f, p=[0.40, 0.15, 0.45])
    f_failed = np.where(rng.random(f) < 0.55, 1 + rng.poisson(2.0, f), 0)
    acts = rng.random(f) >= 0.2  # the others only look around
    f_pw = acts & (rng.random(f) < 0.85)
    f_pw_delay = rng.uniform(20, 600, f)
    f_quick = f_pw & (rng.random(f) < 0.8)
    f_email = f_quick | (acts & ~f_pw & (rng.random(f) < 0.5))
    f_email_delay = np.where(f_quick, f_pw_delay + rng.uniform(15, 240, f), rng.uniform(20, 900, f))
    f_phone = acts & (rng.random(f) < 0.35)

    both: dict[str, np.ndarray] = {
        name: np.concatenate([legit, takeover]) for name, legit, takeover in (
            ("user", user, victim), ("t", t, f_t), ("hour", hour, f_hour),
            ("device", device, f_device), ("country", country, f_country), ("ip", ip, f_ip),
            ("failed", failed, f_failed), ("fraud", fraud, np.ones(f, dtype=bool)),
            ("pw", pw, f_pw), ("email", email, f_email), ("phone", phone, f_phone),
            ("pw_delay", pw_delay, f_pw_delay), ("email_delay", email_delay, f_email_delay))}
    order = np.lexsort((both["t"], both["user"]))
    col = {name: values[order] for name, values in both.items()}
    user, device, country, fraud = col["user"], col["device"], col["country"], col["fraud"]
    same_user_next = np.r_[user[1:] == user[:-1], False]
    # a victim whose password was changed resets it at their next (legitimate) login
    recover = np.r_[False, (fraud & col["pw"] & same_user_next)[:-1]] & ~fraud
    pw = col["pw"] | (recover & (rng.random(user.size) < sim.recovery_share))
    phone_delay = rng.uniform(30, 900, user.size)
    # a device is new the first time the user is seen with it, unless known before the window
    pair_first = np.unique(user * 4 * 10**9 + device, return_index=True)[1]
    first = np.zeros(user.size, dtype=bool)
    first[pair_first] = True
    known_device = (device >= user * 10) & (device < user * 10 + known[user])
    new_device = first & ~known_device
    previous = np.r_[-1, country[:-1]]
    starts = np.r_[True, user[1:] != user[:-1]]
    previous[starts] = home[user[starts]]

    login = np.datetime64(START, "s") + col["t"].astype("timedelta64[s]")

    def at(happened: np.ndarray, delay: np.ndarray) -> pa.Array:
        return pa.array(login + delay.astype("timedelta64[s]"), mask=~happened)

    names = np.array(COUNTRIES)
    return pa.table({
        "session_id": _ids("s", np.arange(user.size), 7),
        "customer_id": _ids("c", user, 6),
        "login_at": pa.array(login),
        "local_hour": pa.array(col["hour"].astype(np.int64)),
        "country": pa.array(names[country]),
        "home_country": pa.array(names[home[user]]),
        "previous_country": pa.array(names[previous]),
        "device_id": _ids("d", device, 10),
        "new_device": pa.array(new_device),
        "ip_type": pa.array(np.array(["residential", "mobile", "datacenter"])[col["ip"]]),
        "failed_logins_1h": pa.array(col["failed"].astype(np.int64)),
        "password_changed_at": at(pw, col["pw_delay"]),
        "email_changed_at": at(col["email"], col["email_delay"]),
        "phone_changed_at": at(col["phone"], phone_delay),
        "is_fraud": pa.array(fraud),
    })


def describe(sessions: pa.Table) -> dict[str, Any]:
    """The simulated world's rates, legitimate sessions beside takeovers (for the docs)."""
    table = with_features(sessions, FEATURES)
    fraud = bool_column(table, "is_fraud")
    signals = ["new_device", "foreign_country", "country_changed", "datacenter_ip",
               "password_changed", "email_changed", "password_then_email_within_5m"]
    rates: dict[str, Any] = {}
    for name in signals:
        flag = bool_column(table, name)
        rates[name] = {"legit": float(flag[~fraud].mean()), "takeover": float(flag[fraud].mean())}
    failed = np.asarray(table.column("failed_logins_1h").to_numpy(), dtype=np.int64) > 0
    rates["failed_logins_before"] = {"legit": float(failed[~fraud].mean()),
                                     "takeover": float(failed[fraud].mean())}
    return {"sessions": table.num_rows, "customers": len(pc.unique(table["customer_id"])),
            "takeovers": int(fraud.sum()), "takeover_rate": float(fraud.mean()), "signals": rates}


def _split(sessions: pa.Table) -> np.ndarray:
    """True for the sessions of the last days (the program's batch and the evaluation)."""
    cut = np.datetime64(START, "s") + np.timedelta64(TRAIN_DAYS * DAY, "s")
    return sessions.column("login_at").to_numpy() >= cut


def prepare(project_dir: Path, seed: int = 7, *, users: int = 20_000,
            force: bool = False) -> dict[str, Any]:
    """Generate the sessions under ``data/poc/`` and train ``models/poc/fraud_takeover.txt``,
    unless already there for this seed and size."""
    root = Path(project_dir)
    sim = Simulation(users=users)
    wanted = {"version": VERSION, "seed": seed, "simulation": asdict(sim)}
    manifest = read_manifest(root / MANIFEST)
    if not force and is_current(manifest, wanted, root):
        return manifest
    sessions = generate(sim, seed)
    later = _split(sessions)
    history, batch = sessions.filter(pa.array(~later)), sessions.filter(pa.array(later))
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(history, root / HISTORY)
    pq.write_table(batch.drop_columns(["is_fraud"]), root / SESSIONS)
    pq.write_table(batch.select(["session_id", "is_fraud"]), root / OUTCOMES)
    train_lightgbm(with_features(history, FEATURES), MODEL_FEATURES,
                   bool_column(history, "is_fraud"), root / MODEL, seed=seed, rounds=ROUNDS,
                   num_leaves=15, min_data_in_leaf=50)
    manifest = {**wanted, "files": [str(p) for p in (HISTORY, SESSIONS, OUTCOMES, MODEL)],
                "world": describe(sessions), "history_sessions": history.num_rows,
                "history_takeovers": int(bool_column(history, "is_fraud").sum()),
                "metrics": evaluate(root)}
    write_manifest(root / MANIFEST, manifest)
    return manifest


def evaluate(project_dir: Path, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Precision and recall on the last days' sessions: the model at ``threshold`` (after the
    program's filter) against the rules."""
    root = Path(project_dir)
    batch = with_features(pq.read_table(root / SESSIONS), {
        **FEATURES, "risk_signal": RISK_SIGNAL, "rule_login": RULE_LOGIN,
        "rule_takeover": RULE_TAKEOVER})
    outcomes = pq.read_table(root / OUTCOMES)
    if batch.column("session_id").to_pylist() != outcomes.column("session_id").to_pylist():
        raise ValueError("sessions and their outcomes are not aligned")
    labels = bool_column(outcomes, "is_fraud")
    scores = predict(root / MODEL, batch, MODEL_FEATURES)
    scores[~bool_column(batch, "risk_signal")] = 0.0  # the filter drops them before scoring
    login, takeover = bool_column(batch, "rule_login"), bool_column(batch, "rule_takeover")
    return {
        "sessions": batch.num_rows, "days": _days(batch), "takeovers": int(labels.sum()),
        "fraud_rate": float(labels.mean()), "threshold": threshold,
        "model": {**precision_recall(labels, scores >= threshold),
                  "average_precision": average_precision(labels, scores)},
        "rules": precision_recall(labels, login | takeover),
        "rule_login": precision_recall(labels, login),
        "rule_takeover": precision_recall(labels, takeover),
        "model_at": {f"{t:g}": precision_recall(labels, scores >= t) for t in OTHER_THRESHOLDS},
    }


def _days(batch: pa.Table) -> int:
    days = pc.unique(pc.floor_temporal(batch.column("login_at"), unit="day"))
    return len(days)


def report(metrics: dict[str, Any], console: Console) -> None:
    m, r = metrics["model"], metrics["rules"]
    one, two = metrics["rule_login"], metrics["rule_takeover"]
    table = figures_table(f"fraud_takeover: LightGBM at {metrics['threshold']:g} vs rules", [],
                          ("metric", "LightGBM", "rules"))
    table.add_column("new device & foreign", justify="right")
    table.add_column("password→e-mail < 5 min", justify="right")
    for label, key, fmt in (("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
                            ("sessions flagged", "flagged", "{:,}"),
                            ("takeovers caught", "true_positives", "{:,}")):
        table.add_row(label, *(fmt.format(x[key]) for x in (m, r, one, two)))
    console.print(table)
    others = "; ".join(f"at {t}: precision {x['precision']:.3f}, recall {x['recall']:.3f}"
                       for t, x in metrics.get("model_at", {}).items())
    console.print(f"[dim]Synthetic login log: {metrics['sessions']:,} sessions of the last "
                  f"{metrics['days']} days, {metrics['takeovers']} takeovers "
                  f"({metrics['fraud_rate']:.2%}). Rules = new device AND foreign country, OR "
                  f"password then e-mail change within 5 minutes. LightGBM average precision "
                  f"{m['average_precision']:.3f}; {others}.[/dim]")


def report_world(world: dict[str, Any], console: Console) -> None:
    rows = [(name.replace("_", " "), f"{r['legit']:.2%}", f"{r['takeover']:.1%}")
            for name, r in world["signals"].items()]
    console.print(figures_table("fraud_takeover: the simulated world", rows,
                                ("signal", "legitimate sessions", "takeovers")))
    console.print(f"[dim]{world['sessions']:,} sessions of {world['customers']:,} customers over "
                  f"30 days, {world['takeovers']:,} takeovers ({world['takeover_rate']:.2%}).[/dim]")


def main(argv: list[str] | None = None) -> None:
    parser = poc_arguments("python -m ceap.poc.fraud", __doc__)
    parser.add_argument("--users", type=int, default=20_000, help="simulated users")
    args = parser.parse_args(argv)
    manifest = prepare(args.project, args.seed, users=args.users, force=args.force)
    console = Console(width=100)
    report_world(manifest["world"], console)
    report(manifest["metrics"], console)


if __name__ == "__main__":
    main()
