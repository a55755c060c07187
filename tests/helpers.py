"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_program(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def base_program(**overrides: Any) -> dict[str, Any]:
    """A small valid program over ``orders.csv``; override any top-level key."""
    spec: dict[str, Any] = {
        "name": "big_carts",
        "source": {"type": "csv", "path": "orders.csv", "subject_id": "product_id",
                   "context": ["marketplace"], "columns": {"signup": "date", "cart_value": "float"},
                   "max_bad_share": 0.5},
        "filters": [{"id": "big_cart", "expr": "cart_value > 50"},
                    {"id": "us_only", "expr": "country = 'US'"}],
        "scorer": {"type": "expression", "weights": {"cart_value": 0.05}, "bias": -3},
        "selection": {"threshold": 0.3},
        "action": {"type": "offer", "channels": ["email"], "payload": {"discount": 10},
                   "payload_columns": ["cart_value"]},
    }
    spec.update(overrides)
    return spec


ORDERS_HEADER = "customer_id,cart_value,country,signup,product_id,marketplace"
ORDERS = [
    "c1,60,US,2024-01-01,p1,us",
    "c2,40,US,2024-01-02,p2,us",     # removed by big_cart
    "c3,80,FR,2024-01-03,p3,fr",     # removed by us_only
    "c4,100,US,notadate,p4,us",      # quarantined: bad date
    ",70,US,2024-01-01,p5,us",       # quarantined: no customer id
    "c5,75,US,2024-01-05,p6,us",
    "c1,90,US,2024-01-01,p7,us",     # c1's better row
]
