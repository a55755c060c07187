"""The program files the dashboard describes (mode, schedule, experiment), read from the
project's programs folder and read again only when a file changes."""

from __future__ import annotations

from pathlib import Path

from ceap.errors import CeapError
from ceap.spec import ProgramSpec, load_program


class Catalog:
    """``name -> spec`` of the programs folder; files that do not load are listed with
    their error and left out."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._seen: dict[Path, tuple[float, ProgramSpec | None, str | None]] = {}

    def _paths(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")])

    def refresh(self) -> None:
        paths = self._paths()
        for gone in set(self._seen) - set(paths):
            del self._seen[gone]
        for path in paths:
            mtime = path.stat().st_mtime
            if path in self._seen and self._seen[path][0] == mtime:
                continue
            try:
                self._seen[path] = (mtime, load_program(path), None)
            except CeapError as exc:
                self._seen[path] = (mtime, None, str(exc).splitlines()[0])

    def specs(self) -> dict[str, ProgramSpec]:
        self.refresh()
        return {spec.name: spec for _, spec, _ in self._seen.values() if spec is not None}

    def broken(self) -> dict[str, str]:
        """``file name -> first line of its error``."""
        self.refresh()
        return {path.name: error for path, (_, _, error) in self._seen.items() if error}
