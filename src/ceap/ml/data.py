"""The training table: read through the connectors, from a file, a glob or a source block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from ceap.connectors.base import DUCKDB_TYPES, ConnectorConfig
from ceap.errors import CeapError, SpecError
from ceap.plugin import PluginContext
from ceap.registry import Registry, default_registry
from ceap.spec.yaml_io import read_yaml_mapping
from ceap.sqlexpr import evaluate, quote, sandboxed_connection

#: file extension -> connector type
FILE_TYPES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}


class TrainError(CeapError):
    """The training input is unusable (missing column, non-numeric feature, too few rows...)."""


def _validate(data: Any, where: str, registry: Registry) -> ConnectorConfig:
    if not isinstance(data, dict) or "type" not in data:
        raise TrainError(f"{where}: a source needs a 'type' (one of: "
                         f"{', '.join(registry.names('connector'))})")
    try:
        model = registry.get("connector", str(data["type"])).config_model
        return model.model_validate(data)  # type: ignore[return-value]
    except CeapError as exc:
        raise TrainError(f"{where}: {exc}") from None
    except ValidationError as exc:
        issues = [f"{'.'.join(str(p) for p in e['loc'])}: "
                  f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
                  for e in exc.errors()]
        raise TrainError(f"{where}: " + "; ".join(issues)) from None


def source_config(source: str, context: PluginContext, registry: Registry | None = None,
                  spec_file: bool = False) -> ConnectorConfig:
    """A connector config for ``source``: a data file or glob (format from its extension), or
    a YAML file holding a ``source:`` block (a program file works) or a bare source block."""
    registry = registry or default_registry()
    suffix = Path(source).suffix.lower()
    if spec_file or suffix in (".yaml", ".yml"):
        path = context.path(source)
        try:
            data = read_yaml_mapping(path)
        except SpecError as exc:
            raise TrainError(str(exc)) from None
        block = data.get("source", data)
        return _validate(block, f"{source}: source", registry)
    kind = FILE_TYPES.get(suffix)
    if kind is None:
        raise TrainError(f"--source: cannot tell the format of {source!r} from its extension "
                         f"({', '.join(FILE_TYPES)}); give a YAML file with a source block instead")
    return _validate({"type": kind, "path": source}, "--source", registry)


def read_table(config: ConnectorConfig, context: PluginContext,
               registry: Registry | None = None) -> tuple[pa.Table, int, str]:
    """All rows of the source, declared ``columns`` cast to their types.

    Returns the table, how many rows were dropped because a declared column did not
    parse, and a description of the source for the artefact's metadata.
    """
    registry = registry or default_registry()
    connector = registry.create("connector", config, context)
    schema = connector.schema()
    table = pa.Table.from_batches(list(connector.read()), schema=schema)
    declared = {n: k for n, k in config.columns.items() if n in table.column_names}
    dropped = 0
    if declared:
        casts = ", ".join(f"TRY_CAST({quote(n)} AS {DUCKDB_TYPES[k]}) AS {quote(n)}"
                          for n, k in declared.items())
        bad = " OR ".join(f"({quote(n)} IS NOT NULL AND TRY_CAST({quote(n)} AS "
                          f"{DUCKDB_TYPES[k]}) IS NULL)" for n, k in declared.items())
        with sandboxed_connection() as con:
            flagged = evaluate(con, table, f"* REPLACE ({casts}), ({bad}) AS __ceap_bad")
        good = flagged.filter(pc.invert(flagged.column("__ceap_bad")))
        dropped = flagged.num_rows - good.num_rows
        table = good.drop_columns(["__ceap_bad"])
    return table, dropped, f"{config.type}: {connector.describe()}"
