"""The plugin docs work for an author outside this repository.

A package is made in a temporary folder from the code samples of docs/plugins.md and
docs/delivery.md (every ``python`` block whose first line is ``# <file>.py``), its
``pyproject.toml`` from the docs' entry-point sample, plus two plugins an outside author
wrote from those pages alone: a Discord-style channel and a calibration scorer. It is
installed in editable mode (pip) into a fresh environment that sees this one's packages,
then its tests run with ``ceap.testing`` only, the docs' script runs, ``ceap plugins``
lists what it registered (and names a broken entry point), and ``mypy --strict`` checks
it against CEAP's types.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("plugins.md", "delivery.md")

DISCORD = '''
"""A Discord-style webhook channel (CEAP's chat_webhook covers Discord; this one is written
from docs/plugins.md and docs/delivery.md alone)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.channels import ChannelConfig, Message, SendResult
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, Response, body_retry_after, send_json


class DiscordConfig(HttpConfig):
    type: Literal["discord"] = "discord"
    url_env: str = Field("DISCORD_WEBHOOK_URL", description="env var holding the webhook URL")
    username: str | None = None


class DiscordChannel(HttpChannel[DiscordConfig]):
    config_model: ClassVar[type[ChannelConfig]] = DiscordConfig
    default_rate_per_sec: ClassVar[float | None] = 0.5

    def __init__(self, config: DiscordConfig, context: Any = None) -> None:
        super().__init__(config, context)
        self._url = env_secret(self, config.url_env, "webhook URL")

    def deliver_one(self, m: Message) -> SendResult:
        body: dict[str, Any] = {"content": f"**{m.title}**\\n{m.body or ''}".strip()}
        if self.config.username:
            body["username"] = self.config.username

        def message_id(answer: Response) -> str | None:
            return str(answer.json()["id"])

        return send_json(self.client, self._url.get_secret_value() + "?wait=true", body, {},
                         m.idempotency_key, provider_id=message_id, retry_after=body_retry_after())
'''

CALIBRATION = '''
"""A scorer: a vendor's raw score calibrated to a probability (Platt scaling)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import Field

from ceap.scorers import Scorer, ScorerConfig
from ceap.scorers.base import feature_matrix


class CalibrationConfig(ScorerConfig):
    type: Literal["calibration"] = "calibration"
    column: str = Field(description="the vendor's raw score")
    slope: float = 1.0
    intercept: float = 0.0


class CalibrationScorer(Scorer[CalibrationConfig]):
    config_model: ClassVar[type[ScorerConfig]] = CalibrationConfig

    def features(self) -> list[str]:
        return [self.config.column]

    def model_id(self) -> str:
        return f"calibration@{self.config.slope:g},{self.config.intercept:g}"

    def score(self, table: pa.Table) -> npt.NDArray[np.float64]:
        raw = feature_matrix(table, self.features())[:, 0]
        return 1.0 / (1.0 + np.exp(-(self.config.slope * raw + self.config.intercept)))
'''

OUTSIDE_TESTS = '''
"""The outside author's tests: ceap.testing only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ceap.errors import SourceError
from ceap.plugin import PluginContext
from ceap.registry import Registry
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.store import open_store
from ceap.testing import (MemoryConnector, ProviderServer, Reply, check_channel, check_registration,
                          check_scorer, make_messages)
from ceap_calibration import CalibrationScorer
from ceap_discord import DiscordChannel


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        server.default = lambda request: Reply(200, {"id": str(len(server.requests))})
        monkeypatch.setenv("DISCORD_WEBHOOK_URL", f"{server.url}/api/webhooks/1/token")
        yield server


def test_discord_passes_the_suite(discord: ProviderServer, tmp_path: Path) -> None:
    check_registration("channel", "discord", DiscordChannel)
    check_channel(DiscordChannel, {"type": "discord", "allow_private": True, "sent_keys": "sent.db"},
                  PluginContext(base_dir=tmp_path), make_messages(4))
    calls = discord.calls("/api/webhooks/1/token")
    assert len(calls) == 4 + 2 and all(c.query == {"wait": "true"} for c in calls)
    assert all(c.json()["content"].startswith("**Hello") for c in calls)


def test_discord_waits_what_the_body_says(discord: ProviderServer) -> None:
    discord.script(Reply(429, {"message": "You are being rate limited.", "retry_after": 2.5}))
    channel = DiscordChannel.from_dict({"type": "discord", "allow_private": True, "concurrency": 1})
    try:
        first, second = channel.send(make_messages(2))
    finally:
        channel.close()
    assert (first.status, first.retryable, first.retry_after) == ("failed", True, 2.5)
    assert second.retryable and second.retry_after == 2.5 and len(discord.requests) == 1


def test_calibration_passes_the_suite() -> None:
    check_registration("scorer", "calibration", CalibrationScorer)
    check_scorer(CalibrationScorer, {"type": "calibration", "column": "vendor_score", "slope": 2.0},
                 None, pa.table({"vendor_score": [-1.0, 0.0, 3.0, None]}))


def test_a_misspelt_column_names_the_field_written(tmp_path: Path) -> None:
    registry = Registry.discover()
    registry.register("connector", "memory", MemoryConnector)
    spec = parse_program({"name": "calibrated",
                          "source": {"type": "memory", "rows": [{"customer_id": "c1", "vendor_score": 1.0}]},
                          "scorer": {"type": "calibration", "column": "vendor_scor"},
                          "action": {"type": "inform", "channels": ["inapp"]}}, registry=registry)
    context = PluginContext(base_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}", context=context)
    with pytest.raises(SourceError, match=r"^scorer\\.column: unknown column 'vendor_scor'"):
        run_program(spec, store, context, registry=registry)
    store.close()
'''

#: appended to the docs' table of filters (first line: a typo in a module name, a broken
#: plugin), then the entry points the other samples and the outside plugins need
MORE_ENTRY_POINTS = '''broken_typo = "ceap_suppresion:SuppressionListFilter"

[project.entry-points."ceap.connectors"]
arrow_file = "ceap_arrowfile:ArrowFileConnector"

[project.entry-points."ceap.scorers"]
recency = "ceap_recency:RecencyScorer"
calibration = "ceap_calibration:CalibrationScorer"

[project.entry-points."ceap.channels"]
jsonl_file = "ceap_jsonl_channel:JsonlFileChannel"
gateway_sms = "ceap_gateway_sms:GatewaySmsChannel"
discord = "ceap_discord:DiscordChannel"
'''


def named_blocks(page: str) -> dict[str, str]:
    """The page's code blocks that start with ``# <file>`` (python and toml), by file name."""
    found = {}
    for lang, body in re.findall(r"```(python|toml)\n(.*?)```", (DOCS / page).read_text(), re.S):
        first = body.splitlines()[0]
        match = re.fullmatch(r"# (\w+\.py)(?: .*)?", first)
        if lang == "python" and match:
            found[match.group(1)] = body
        elif lang == "toml" and "[project]" in body:
            found["pyproject.toml"] = body
    return found


def make_package(folder: Path) -> list[str]:
    """Write the package; return its module names."""
    files: dict[str, str] = {}
    for page in PAGES:
        for name, body in named_blocks(page).items():
            assert name not in files or name == "pyproject.toml", f"{name} is in two pages"
            files.setdefault(name, body)
    files["ceap_discord.py"] = DISCORD.lstrip()
    files["ceap_calibration.py"] = CALIBRATION.lstrip()
    files["test_outside.py"] = OUTSIDE_TESTS.lstrip()
    modules = sorted(n[:-3] for n in files if n.startswith("ceap_"))
    files["pyproject.toml"] = (
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        + files["pyproject.toml"] + MORE_ENTRY_POINTS
        + f"\n[tool.hatch.build.targets.wheel]\nonly-include = {[f'{m}.py' for m in modules]!r}\n"
        .replace("'", '"') + 'dev-mode-dirs = ["."]\n')  # editable: a .pth to the folder
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_text(body)
    return modules


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(the package folder, the environment's python, the plugin modules)."""
    root = tmp_path_factory.mktemp("outside")
    package = root / "ceap-suppression"
    modules = make_package(package)
    env = root / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    [env_site] = env.glob("lib/python*/site-packages")
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (env_site / "ceap_host.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in ours) + "\n")
    python = env / "bin" / "python"
    # the backend is in the dev extra (no download); without it pip fetches one
    backend_here = subprocess.run([python, "-c", "import hatchling"], capture_output=True).returncode == 0
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
           "--disable-pip-version-check", *(["--no-build-isolation"] if backend_here else []),
           "-e", str(package)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return package, python, modules


def run(python: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CEAP_STORE")}
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_samples_and_the_outside_plugins_pass_their_tests(installed: tuple[Path, Path, list[str]],
                                                               tmp_path: Path) -> None:
    package, python, _ = installed
    tests = sorted(p.name for p in package.glob("test_*.py"))
    assert {"test_suppression.py", "test_examples.py", "test_gateway_sms.py", "test_program.py",
            "test_outside.py"} <= set(tests)
    done = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
               *tests, cwd=package)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b1[0-9] passed\b", done.stdout), done.stdout[-500:]


def test_the_docs_script_prints_what_the_docs_say(installed: tuple[Path, Path, list[str]],
                                                   tmp_path: Path) -> None:
    package, python, _ = installed
    script = (package / "run_example.py").read_text()
    [expected] = re.findall(r"print\(.*\)\s+# (.*)", script)
    done = run(python, str(package / "run_example.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected.strip()


def test_ceap_plugins_lists_them_and_names_the_broken_one(installed: tuple[Path, Path, list[str]],
                                                          tmp_path: Path) -> None:
    _, python, _ = installed
    done = run(python, "-m", "ceap", "plugins", cwd=tmp_path)
    rows = {tuple(line.split("\t")) for line in done.stdout.splitlines()[1:]}
    for kind, name, target in (("filter", "suppression_list", "ceap_suppression:SuppressionListFilter"),
                               ("channel", "discord", "ceap_discord:DiscordChannel"),
                               ("scorer", "calibration", "ceap_calibration:CalibrationScorer")):
        assert (kind, name, target, "ceap-suppression") in rows
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "broken: cannot load filter plugin 'broken_typo' (ceap_suppresion:SuppressionListFilter, "
        "from ceap-suppression): No module named 'ceap_suppresion'")


def test_a_broken_plugin_stops_only_the_programs_naming_it(installed: tuple[Path, Path, list[str]],
                                                           tmp_path: Path) -> None:
    """One clear line naming the file and the field, exit 2 (docs/plugins.md#checks-at-registration)."""
    _, python, _ = installed
    (tmp_path / "programs").mkdir()
    (tmp_path / "c.csv").write_text("customer_id\nc1\n")
    program = ("name: {name}\nsource: {{type: csv, path: c.csv}}\n{filters}"
               "action: {{type: inform, channels: [inapp]}}\n")
    (tmp_path / "programs" / "fine.yaml").write_text(program.format(name="fine", filters=""))
    done = run(python, "-m", "ceap", "run", "fine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "programs" / "q.yaml").write_text(
        program.format(name="q", filters="filters: [{id: f, type: broken_typo}]\n"))
    done = run(python, "-m", "ceap", "run", "q", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.endswith("programs/q.yaml: filters[0].type: cannot load filter plugin 'broken_typo' "
                         "(ceap_suppresion:SuppressionListFilter, from ceap-suppression): "
                         "No module named 'ceap_suppresion'")


def test_mypy_strict_sees_ceaps_types(installed: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    package, python, modules = installed
    done = run(python, "-m", "mypy", "--strict", "--ignore-missing-imports", "--no-incremental",
               "--cache-dir", str(tmp_path / "cache"), *(f"{m}.py" for m in modules), cwd=package,
               timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Class cannot subclass" not in done.stdout
