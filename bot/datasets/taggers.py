"""Which tagger a dataset uses: the tiny one (built on first use), a local folder or a hub id."""

from __future__ import annotations

import threading
from pathlib import Path

from ..buildonce import build_folder_once
from ..settings import Settings


class TaggerProvider:
    """Loads each tagger once and keeps it; safe to call from worker threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._cache: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, source: str):
        from trainer.tagger import Tagger

        with self._lock:
            if source not in self._cache:
                if source == "tiny":
                    self._cache[source] = Tagger(self.tiny_path())
                elif Path(source).is_dir():
                    self._cache[source] = Tagger(source)
                else:
                    self._cache[source] = Tagger.from_source(
                        source, self.settings.data_dir / "models" / "taggers"
                    )
            return self._cache[source]

    def tiny_path(self) -> Path:
        from trainer.tiny_tagger import make_tiny_tagger

        path = self.settings.data_dir / "models" / "tiny-tagger"
        return build_folder_once(path, "selected_tags.csv", make_tiny_tagger)
