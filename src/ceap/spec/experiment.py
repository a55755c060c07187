"""A program's experiment: holdout, global control group, A/B/n variants, bandit, learning.

See docs/experiments.md. Assignment itself (hashes, weights) is in
``ceap.experiments.assignment``; these models only say what a program asks for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ceap.durations import Duration
from ceap.factories import empty_dict, empty_list

VARIANT_NAME = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One arm of an A/B/n test: a weight, and what it changes in the program's action."""

    name: str = Field(pattern=VARIANT_NAME, description="recorded on each candidate as `variant`")
    weight: float = Field(1.0, gt=0, description="relative share of the treated customers")
    template: str | None = Field(None, description="replaces action.template")
    channels: list[str] | None = Field(None, min_length=1, description="replaces action.channels")
    payload: dict[str, Any] = Field(default_factory=empty_dict,
                                    description="merged over action.payload (JSON merge patch)")
    delay: Duration | None = Field(None, description="replaces action.delay")


class Bandit(_Strict):
    """Thompson sampling over the variants: shares follow the posterior probability of
    being the best arm, never below ``min_share``."""

    type: Literal["thompson"] = "thompson"
    metric: Literal["conversion"] = Field(
        "conversion", description="Beta-Bernoulli on whether a treated candidate converted")
    min_share: float = Field(0.05, ge=0.0, lt=1.0, description="floor of every variant's share")
    prior_alpha: float = Field(1.0, gt=0, description="Beta prior: pseudo-conversions")
    prior_beta: float = Field(1.0, gt=0, description="Beta prior: pseudo-non-conversions")
    draws: int = Field(20000, ge=1000, le=1_000_000,
                       description="Monte Carlo draws for the probability of being best")
    seed: int = Field(0, ge=0, description="seed of the Monte Carlo draws (same data, same shares)")


class Guardrails(_Strict):
    """Rates above which the uplift report warns (per treated customer)."""

    max_unsubscribe_rate: float = Field(0.005, ge=0.0, le=1.0)
    max_complaint_rate: float = Field(0.001, ge=0.0, le=1.0)


class Experiment(_Strict):
    """How the program's worth is measured, and how its variants are chosen."""

    holdout: float = Field(0.0, ge=0.0, lt=1.0, description="share of selected customers held out")
    global_control: bool | None = Field(
        None, description="respect the tenant-wide global control group (default: true for "
                          "marketing programs; transactional and security programs are exempt)")
    variants: list[Variant] = Field(default_factory=empty_list, description="A/B/n arms of the treatment")
    bandit: Bandit | None = Field(None, description="adapt the variants' shares to the outcomes")
    learn: bool = Field(False, description="feed final outcomes of treated candidates to the "
                                           "program's River scorer (a new model version each time)")
    guardrails: Guardrails = Field(default_factory=lambda: Guardrails.model_validate({}))

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, value: list[Variant]) -> list[Variant]:
        seen: set[str] = set()
        for v in value:
            if v.name in seen:
                raise ValueError(f"variant name {v.name!r} is used twice")
            seen.add(v.name)
        if len(value) == 1:
            raise ValueError("give at least two variants (one variant is the program's action)")
        return value

    @field_validator("bandit")
    @classmethod
    def _bandit_needs_variants(cls, value: Bandit | None, info: ValidationInfo) -> Bandit | None:
        if "variants" not in info.data:  # invalid: its own error says why; no second guess here
            return value
        variants = info.data["variants"]
        if value is not None:
            if len(variants) < 2:
                raise ValueError("a bandit needs at least two variants")
            if value.min_share * len(variants) > 1:
                raise ValueError(f"min_share {value.min_share} for each of {len(variants)} "
                                 "variants is more than 100%")
        return value

    def uses_global_control(self, category: str) -> bool:
        """Whether the program's candidates are subject to the global control group."""
        if category != "marketing":
            return False
        return True if self.global_control is None else self.global_control


__all__ = ["Bandit", "Experiment", "Guardrails", "Variant"]
