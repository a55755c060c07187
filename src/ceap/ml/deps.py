"""Optional model libraries: imported when first needed, with the install line when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ceap.errors import PluginError

#: module -> the extra that installs it
EXTRAS = {"xgboost": "xgboost", "sklearn": "sklearn", "skops": "sklearn", "river": "online",
          "statsmodels": "experiments", "scipy": "experiments", "vl_convert": "experiments"}


class MissingDependency(PluginError):
    """An optional model library is not installed."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or fail with the exact ``pip install`` to run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", 1)[0]
        extra = EXTRAS.get(top)
        install = f"pip install 'ceap[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependency(f"{what} needs the {top} package, which is not installed "
                                f"({exc}); run: {install}") from None
