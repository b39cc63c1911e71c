"""The operator's base models: a TOML registry file, or the built-in tiny models.

```toml
[models.pony-v6]
source = "/models/ponyDiffusionV6XL.safetensors"  # single file, diffusers folder, or hub id
family = "sdxl"                                    # a family of the table; detected for local files when left out
config = "/models/configs/sdxl-base"               # diffusers config folder for a single file (offline)
label = "Pony Diffusion V6 XL"
```

With no registry configured, or one that lists no model yet (the template ``init`` writes), it
holds a tiny model of each family (``tiny-sd15``, ``tiny-sdxl``, ...), built into the data folder on
first use, so everything runs offline; adding a real model replaces them. An unknown key in the
file is refused with the closest known one ("did you mean").
"""

from __future__ import annotations

import dataclasses
import difflib
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


#: The keys of one ``[models.KEY]`` table.
ENTRY_KEYS = ("source", "family", "config", "label")


class ModelRegistry:
    def __init__(self, entries: dict[str, BaseModelEntry], data_dir: Path, *, built_in: bool = False):
        self.entries = entries
        self.data_dir = data_dir
        #: True when the tiny models are offered because no registry file lists a model (yet)
        self.built_in = built_in

    @classmethod
    def tiny(cls, data_dir: Path) -> ModelRegistry:
        """The built-in registry: a tiny model of each family, built into the data folder on first use."""
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
        return cls(entries, data_dir, built_in=True)

    @classmethod
    def load(cls, path: Path | None, data_dir: Path) -> ModelRegistry:
        """The registry file's models; the built-in tiny ones when no file is set or it lists none yet
        (``init`` writes a template of examples), so a fresh install works at once."""
        if path is None:
            return cls.tiny(data_dir)
        data = _read(Path(path))
        entries = {key: _entry(path, key, spec) for key, spec in data.get("models", {}).items()}
        return cls(entries, data_dir) if entries else cls.tiny(data_dir)

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


def _read(path: Path) -> dict:
    """The parsed file, its top-level keys checked; RegistryError saying how to fix it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(
            f"model registry {path} does not exist: create it with 'python -m bot init --registry {path}' "
            "or 'python -m bot models add KEY SOURCE', or fix LORABOT_MODEL_REGISTRY"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"model registry {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"model registry {path} is not valid TOML ({exc}): fix that line") from None
    for key in data:
        if key != "models":
            raise RegistryError(f"model registry {path}: unknown table or key '{key}'{_did_you_mean(key, ['models'])}: "
                                "each model is a [models.KEY] table")  # fmt: skip
    if not isinstance(data.get("models", {}), dict):
        raise RegistryError(f"model registry {path}: 'models' must be tables, one [models.KEY] per model")
    return data


def _entry(path: Path, key: str, spec: object) -> BaseModelEntry:
    where = f"model registry {path}: [models.{key}]"
    if not isinstance(spec, dict):
        raise RegistryError(f'{where} must be a table with a source (source = "...")')
    for name in spec:
        if name not in ENTRY_KEYS:
            raise RegistryError(f"{where} has an unknown key '{name}'{_did_you_mean(name, ENTRY_KEYS)}: "
                                f"a model takes {', '.join(ENTRY_KEYS)}")  # fmt: skip
    if not isinstance(spec.get("source"), str) or not spec["source"].strip():
        raise RegistryError(f"{where} needs a source: a .safetensors file, a diffusers folder or a hub id")
    family = spec.get("family")
    if family is not None and family not in FAMILIES:
        hint = _did_you_mean(str(family).lower(), list(FAMILIES))
        raise RegistryError(f"{where} family '{family}' is not a family{hint}: one of {', '.join(FAMILIES)}")
    if family is None and not Path(spec["source"]).exists():
        raise RegistryError(f"{where}: {spec['source']} is not a local file or folder, so its family cannot "
                            f"be read: give family = one of {', '.join(FAMILIES)} (a hub id), or fix the path")  # fmt: skip
    for name in ("config", "label"):
        if name in spec and not isinstance(spec[name], str):
            raise RegistryError(f"{where} {name} must be text in quotes")
    return BaseModelEntry(key, spec["source"], family, spec.get("config"), spec.get("label", ""))


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
