"""Deterministic assignment: program holdout, global control group, variants.

Every draw is a pure function of text keys: the upper 64 bits of their MD5
(DuckDB's ``md5_number_upper``: the first 8 bytes of the digest, little-endian)
as a fraction of 2^64. The SQL below computes them column-wise in DuckDB; the
Python functions are the same thing one customer at a time (for docs and tests):

- program holdout: ``f"{tenant}:{program}:{customer}"`` below the holdout share;
- global control group: ``f"{tenant}:global_control:{customer}"`` below the project's
  share (no program in it, so it is the same for every program, and stays so as
  programs are added; a program may not be named ``global_control``);
- variant: ``f"{tenant}:{program}:{customer}:variant"`` placed on the cumulative
  weights (independent of the holdout draw, whose key differs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ceap.spec.experiment import Variant

TWO_64 = "18446744073709551616.0"


def unit_fraction(key: str) -> float:
    """``md5_number_upper(key) / 2^64`` in Python."""
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "little") / 2**64


def in_holdout(tenant: str, program: str, customer: str, share: float) -> bool:
    return unit_fraction(f"{tenant}:{program}:{customer}") < share


def in_global_control(tenant: str, customer: str, share: float) -> bool:
    return unit_fraction(f"{tenant}:global_control:{customer}") < share


def bounds(weights: Sequence[float]) -> list[float]:
    """The upper bound of each variant's slice of [0, 1) (the last is 1)."""
    total = float(sum(weights))
    out, running = [], 0.0
    for w in weights:
        running += float(w)
        out.append(running / total)
    out[-1] = 1.0
    return out


def variant_of(tenant: str, program: str, customer: str, names: Sequence[str],
               weights: Sequence[float]) -> str:
    u = unit_fraction(f"{tenant}:{program}:{customer}:variant")
    for name, upper in zip(names, bounds(weights), strict=True):
        if u < upper:
            return name
    return names[-1]


def weights_for(variants: Sequence[Variant], shares: Mapping[str, float] | None) -> list[float]:
    """The weights to assign with: the bandit's latest shares when they cover exactly these
    variants, else the spec's weights."""
    names = [v.name for v in variants]
    if shares and set(shares) == set(names) and all(shares[n] > 0 for n in names):
        return [float(shares[n]) for n in names]
    return [v.weight for v in variants]


# -- SQL (DuckDB) -----------------------------------------------------------------------

_SEP = " || ':' || "


def _fraction_sql(*parts: str) -> str:
    return f"md5_number_upper({_SEP.join(parts)}) / {TWO_64}"


def holdout_sql(customer: str) -> str:
    """True for the program holdout; uses ``$tenant``, ``$program``, ``$holdout``."""
    return f"{_fraction_sql('$tenant', '$program', customer)} < $holdout"


def global_control_sql(customer: str) -> str:
    """True for the global control group; uses ``$tenant`` and ``$global_control``."""
    group = "'global_control'"
    return f"{_fraction_sql('$tenant', group, customer)} < $global_control"


class VariantSql:
    """DuckDB expressions for a program's variants: the draw, the name, and each override.

    ``params()`` are the query parameters they use (all prefixed ``v_``)."""

    DRAW = "__variant_u"

    def __init__(self, variants: Sequence[Variant], weights: Sequence[float], customer: str):
        self.variants = list(variants)
        self.bounds = bounds(weights) if variants else []
        self.customer = customer

    def __bool__(self) -> bool:
        return bool(self.variants)

    def draw(self) -> str:
        """The variant draw in [0, 1), as a column ``DRAW`` computed once per row."""
        return _fraction_sql("$tenant", "$program", self.customer, "'variant'")

    def name(self) -> str:
        """The variant's name (NULL without variants); reads the ``DRAW`` column."""
        if not self.variants:
            return "CAST(NULL AS VARCHAR)"
        whens = " ".join(f"WHEN {self.DRAW} < $v_upper_{i} THEN $v_name_{i}"
                         for i in range(len(self.variants) - 1))
        return f"CASE {whens} ELSE $v_name_{len(self.variants) - 1} END"

    def pick(self, variant: str, field: str, default: str) -> str:
        """``default``, or for the variants that override ``field`` their value
        (payload: merged over ``default`` with ``json_merge_patch``)."""
        whens = []
        for i, v in enumerate(self.variants):
            if field == "payload" and v.payload:
                whens.append(f"WHEN $v_name_{i} THEN json_merge_patch({default}, $v_payload_{i})")
            elif field != "payload" and getattr(v, field) is not None:
                whens.append(f"WHEN $v_name_{i} THEN $v_{field}_{i}")
        return f"CASE {variant} {' '.join(whens)} ELSE {default} END" if whens else default

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, v in enumerate(self.variants):
            out[f"v_name_{i}"] = v.name
            if i < len(self.variants) - 1:
                out[f"v_upper_{i}"] = self.bounds[i]
            if v.template is not None:
                out[f"v_template_{i}"] = v.template
            if v.channels is not None:
                out[f"v_channels_{i}"] = json.dumps(v.channels)
            if v.payload:
                out[f"v_payload_{i}"] = json.dumps(v.payload)
            if v.delay is not None:
                out[f"v_delay_{i}"] = v.delay
        return out
