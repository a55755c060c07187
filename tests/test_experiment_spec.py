"""Experiment fields of a program and of ceap.yaml: what is accepted, and the
`file: field: message` errors for what is not (in the loader and in `ceap validate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from ceap.errors import SpecError
from ceap.spec import load_project, parse_program
from tests.helpers import write_program

runner = CliRunner()


def program(**experiment: Any) -> dict[str, Any]:
    action = experiment.pop("action", {})
    return {"name": "promo", "source": {"type": "csv", "path": "x.csv"},
            "action": {"type": "offer", "channels": ["email"], **action},
            "experiment": experiment, **experiment.pop("top", {}),
            **({"goal": {"event": "purchase", "within": "1d"}}
               if "bandit" in experiment or experiment.get("learn") else {})}


def issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_program(data, "programs/promo.yaml")
    return caught.value.lines()


def test_a_full_experiment_is_accepted() -> None:
    spec = parse_program(program(
        holdout=0.1, global_control=True,
        variants=[{"name": "a", "weight": 1, "template": "offer_a"},
                  {"name": "b", "weight": 3, "template": "offer_b", "payload": {"discount_pct": 20},
                   "channels": ["sms"], "delay": "2h"}],
        bandit={"type": "thompson", "min_share": 0.1, "metric": "conversion"}))
    exp = spec.experiment
    assert [v.name for v in exp.variants] == ["a", "b"] and exp.variants[1].delay.total_seconds() == 7200
    assert exp.bandit is not None and exp.bandit.min_share == 0.1
    assert exp.uses_global_control("marketing")


@pytest.mark.parametrize("experiment, expected", [
    ({"variants": [{"name": "a"}, {"name": "a"}]},
     "programs/promo.yaml: experiment.variants: variant name 'a' is used twice"),
    ({"variants": [{"name": "a", "weight": 0}, {"name": "b"}]},
     "programs/promo.yaml: experiment.variants[0].weight: Input should be greater than 0"),
    ({"variants": [{"name": "a"}]},
     "programs/promo.yaml: experiment.variants: give at least two variants (one variant is the "
     "program's action)"),
    ({"variants": [{"name": "A b"}, {"name": "b"}]},
     "programs/promo.yaml: experiment.variants[0].name: String should match pattern "
     "'^[a-z][a-z0-9_]*$'"),
    ({"variants": [{"name": "a", "tempalte": "x"}, {"name": "b"}]},
     "programs/promo.yaml: experiment.variants[0].tempalte: unknown field (did you mean 'template'?)"),
    ({"variants": [{"name": "a", "channels": []}, {"name": "b"}]},
     "programs/promo.yaml: experiment.variants[0].channels: List should have at least 1 item after "
     "validation, not 0"),
    ({"bandit": {"type": "thompson"}},
     "programs/promo.yaml: experiment.bandit: a bandit needs at least two variants"),
    ({"variants": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "bandit": {"min_share": 0.4}},
     "programs/promo.yaml: experiment.bandit: min_share 0.4 for each of 3 variants is more than 100%"),
    ({"variants": [{"name": "a"}, {"name": "b"}], "bandit": {"type": "epsilon"}},
     "programs/promo.yaml: experiment.bandit.type: Input should be 'thompson'"),
    ({"global_control": True, "action": {"category": "security"}},
     "programs/promo.yaml: experiment.global_control: security programs are exempt from the global "
     "control group; remove the field or set it to false"),
    ({"learn": True},
     "programs/promo.yaml: experiment.learn: needs a river scorer (the online model learns from "
     "the outcomes)"),
    ({"learn": True, "top": {"scorer": {"type": "river", "model": "online@3", "allow_pickle": True}}},
     "programs/promo.yaml: experiment.learn: scorer.model must name a registry model without a "
     "version (e.g. 'churn' or 'churn@latest'), so the program scores with each new version it "
     "learns"),
])
def test_bad_experiments_name_the_field(experiment: dict[str, Any], expected: str) -> None:
    assert expected in issues(program(**experiment))


@pytest.mark.parametrize("variants, expected", [
    ([{"name": "a"}, {"name": "a"}, {"name": "c"}], "variant name 'a' is used twice"),
    ([{"name": "a", "weight": 0}, {"name": "b"}, {"name": "c"}], "Input should be greater than 0"),
])
def test_invalid_variants_do_not_make_the_bandit_claim_there_are_none(
        variants: list[dict[str, Any]], expected: str) -> None:
    lines = issues(program(variants=variants, bandit={"type": "thompson"}))
    assert any(expected in line for line in lines)
    assert not any("needs at least two variants" in line for line in lines), lines


def test_the_global_control_name_is_reserved() -> None:
    assert ("programs/promo.yaml: name: 'global_control' is reserved (the global control group's "
            "hash key); choose another name") in issues({**program(), "name": "global_control"})


def test_transactional_programs_are_exempt_by_default() -> None:
    spec = parse_program(program(action={"category": "transactional"}))
    assert not spec.experiment.uses_global_control("transactional")
    assert not parse_program(program(global_control=False)).experiment.uses_global_control("marketing")


def test_project_global_control_share(tmp_path: Path) -> None:
    (tmp_path / "ceap.yaml").write_text("experiments: {global_control: 0.05}\n")
    project = load_project(tmp_path)
    assert project.experiments.global_control == 0.05 and project.context().global_control == 0.05
    (tmp_path / "ceap.yaml").write_text("experiments: {global_control: 1.5}\n")
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    assert caught.value.lines() == [f"{tmp_path / 'ceap.yaml'}: experiments.global_control: "
                                    "Input should be less than 1"]
    (tmp_path / "ceap.yaml").write_text("experiments: {global_contrl: 0.1}\n")
    with pytest.raises(SpecError, match="experiments.global_contrl: unknown field"):
        load_project(tmp_path)


OFFER_B = {"description": "b", "email": {
    "subject": "{{ payload.discount_pct }}% off", "text": "Code {{ payload.code }} {{ unsubscribe_url }}"}}


def test_validate_checks_variant_templates_and_channels(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ceap.yaml").write_text(yaml.safe_dump(
        {"channels": {"email": {"type": "smtp", "host": "localhost", "sender": "a@example.com"}}}))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "offer_b.yaml").write_text(yaml.safe_dump(OFFER_B))
    (tmp_path / "programs").mkdir()
    spec = program(variants=[
        {"name": "a", "template": "offer_gone"},
        {"name": "b", "template": "offer_b", "payload": {"discount_pct": 20}},
        {"name": "c", "template": "offer_b", "payload": {"discount_pct": 5, "code": "X"},
         "channels": ["sms", "email"]}])
    write_program(tmp_path / "programs" / "promo.yaml", spec)
    result = runner.invoke(app, ["validate", "programs/promo.yaml"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    template = tmp_path / "templates"
    assert (f"programs/promo.yaml: experiment.variants[0].template: template 'offer_gone' not found: "
            f"{template / 'offer_gone.yaml'}") in lines
    assert (f"programs/promo.yaml: experiment.variants[1].template: {template / 'offer_b.yaml'}: "
            "email.text: payload has no key 'code' (the program's payload has: discount_pct)") in lines
    assert ("programs/promo.yaml: experiment.variants[2].channels: channel 'sms' is not configured in "
            "ceap.yaml (configured: email, inapp)") in lines
    assert any(line.startswith("programs/promo.yaml: experiment.variants[2].template: ")
               and "no part for channel 'sms'" in line for line in lines)
    spec["experiment"]["variants"] = [
        {"name": "b", "template": "offer_b", "payload": {"discount_pct": 20, "code": "B"}},
        {"name": "c", "template": "offer_b", "payload": {"discount_pct": 5, "code": "C"},
         "channels": ["inapp", "email"]}]
    OFFER_B["inapp"] = {"title": "t", "body": "{{ payload.code }}"}
    (tmp_path / "templates" / "offer_b.yaml").write_text(yaml.safe_dump(OFFER_B))
    write_program(tmp_path / "programs" / "promo.yaml", spec)
    result = runner.invoke(app, ["validate", "programs/promo.yaml"])
    assert result.exit_code == 0, result.output
