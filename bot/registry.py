"""The operator's base models: a TOML registry file, or the built-in tiny models.

```toml
[models.pony-v6]
source = "/models/ponyDiffusionV6XL.safetensors"  # single file, diffusers folder, or hub id
family = "sdxl"                                    # a family of the table; detected for local files when left out
config = "/models/configs/sdxl-base"               # diffusers config folder for a single file (offline)
label = "Pony Diffusion V6 XL"
```

With no registry configured, it holds a tiny model of each family (``tiny-sd15``,
``tiny-sdxl``, ...), built into the data folder on first use, so everything runs offline.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from trainer.contract.families import FAMILIES, family_label

from .errors import MemberError


def tiny_keys() -> dict[str, str]:
    """The built-in registry: one tiny model per family of the table (key -> family)."""
    return {f"tiny-{key}": key for key in FAMILIES}


log = logging.getLogger(__name__)


class RegistryError(MemberError, ValueError):
    """A base model that is unknown or cannot be used; the message says which and why."""


@dataclass(frozen=True)
class BaseModelEntry:
    key: str
    source: str
    family: str | None
    config: str | None = None
    label: str = ""
    tiny: bool = False


class ModelRegistry:
    def __init__(self, entries: dict[str, BaseModelEntry], data_dir: Path):
        self.entries = entries
        self.data_dir = data_dir

    @classmethod
    def load(cls, path: Path | None, data_dir: Path) -> ModelRegistry:
        if path is None:
            models = data_dir / "models"
            entries = {
                key: BaseModelEntry(
                    key,
                    str(models / key),
                    family,
                    label=f"tiny {family_label(family)} (random weights)",
                    tiny=True,
                )
                for key, family in tiny_keys().items()
            }
            return cls(entries, data_dir)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RegistryError(f"model registry {path}: {exc}") from exc
        entries = {}
        for key, spec in data.get("models", {}).items():
            if not isinstance(spec, dict) or "source" not in spec:
                raise RegistryError(f"model registry {path}: [models.{key}] needs a source")
            family = spec.get("family")
            if family is not None and family not in FAMILIES:
                raise RegistryError(
                    f"model registry {path}: [models.{key}] family must be one of {', '.join(FAMILIES)}"
                )
            if family is None and not Path(str(spec["source"])).exists():
                raise RegistryError(
                    f"model registry {path}: [models.{key}] is not a local file: give its family"
                )
            entries[key] = BaseModelEntry(
                key, str(spec["source"]), family, spec.get("config"), spec.get("label", "")
            )
        if not entries:
            raise RegistryError(f"model registry {path} lists no [models.NAME] table")
        return cls(entries, data_dir)

    def keys(self) -> list[str]:
        return sorted(self.entries)

    def get(self, key: str) -> BaseModelEntry:
        try:
            return self.entries[key]
        except KeyError:
            raise RegistryError(
                f"unknown base model '{key}': choose one of {', '.join(self.keys())}"
            ) from None

    def family(self, key: str) -> str:
        """The entry's family, read from the model's files once when the registry leaves it out
        (that imports torch: call :meth:`detect_families` off the event loop at start-up)."""
        entry = self.get(key)
        if entry.family:
            return entry.family
        from trainer.models import detect_family

        try:
            family = detect_family(entry.source)
        except Exception as exc:  # a missing or corrupt file: safetensors, OS and parse errors alike
            raise RegistryError(
                f"cannot read the family of base model '{key}' ({exc}): ask the operator"
            ) from None
        self.entries[key] = dataclasses.replace(entry, family=family)
        return family

    def detect_families(self) -> None:
        """Fill in every family the registry leaves out; an unreadable model stays for later errors."""
        for key in self.keys():
            try:
                self.family(key)
            except RegistryError as exc:  # reported again when a member picks that model
                log.warning("%s", exc)

    def ensure_available(self, key: str) -> BaseModelEntry:
        """Build a tiny model on first use (slow-ish: call off the event loop)."""
        entry = self.get(key)
        if entry.tiny:
            from trainer.tiny import make_tiny

            from .buildonce import build_folder_once

            build_folder_once(
                Path(entry.source), "model_index.json", lambda out: make_tiny(entry.family, out)
            )
        return entry
