"""CEAP: the Customer Engagement & Action Platform."""

from ceap.errors import CeapError, PluginError, RunError, SourceError, SpecError

__version__ = "0.1.0"

__all__ = ["CeapError", "PluginError", "RunError", "SourceError", "SpecError", "__version__"]
