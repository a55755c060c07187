"""Source connectors: they turn files, databases and streams into Arrow batches."""

from ceap.connectors.base import ColumnType, Connector, ConnectorConfig

__all__ = ["ColumnType", "Connector", "ConnectorConfig"]
