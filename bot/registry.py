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
                "unknown base model '{key}': choose one of {known}", key=key, known=", ".join(self.keys())
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
                "cannot read the family of base model '{key}' ({why}): ask the operator", key=key, why=exc
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
            "model registry {path} does not exist: create it with 'python -m bot init --registry {path}' "
            "or 'python -m bot models add KEY SOURCE', or fix LORABOT_MODEL_REGISTRY",
            path=path,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError("model registry {path} cannot be read: {why}", path=path, why=exc) from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(
            "model registry {path} is not valid TOML ({why}): fix that line", path=path, why=exc
        ) from None
    for key in data:
        if key != "models":
            raise RegistryError("model registry {path}: unknown table or key '{key}'{hint}: each model is a "
                                "[models.KEY] table", path=path, key=key, hint=_did_you_mean(key, ["models"]))  # fmt: skip
    if not isinstance(data.get("models", {}), dict):
        raise RegistryError(
            "model registry {path}: 'models' must be tables, one [models.KEY] per model", path=path
        )
    return data


def _entry(path: Path, key: str, spec: object) -> BaseModelEntry:
    where = {"path": path, "key": key}
    if not isinstance(spec, dict):
        raise RegistryError('model registry {path}: [models.{key}] must be a table with a source (source = "...")',
                            **where)  # fmt: skip
    for name in spec:
        if name not in ENTRY_KEYS:
            raise RegistryError("model registry {path}: [models.{key}] has an unknown key '{name}'{hint}: a model "
                                "takes {known}", name=name, hint=_did_you_mean(name, ENTRY_KEYS),
                                known=", ".join(ENTRY_KEYS), **where)  # fmt: skip
    if not isinstance(spec.get("source"), str) or not spec["source"].strip():
        raise RegistryError("model registry {path}: [models.{key}] needs a source: a .safetensors file, a "
                            "diffusers folder or a hub id", **where)  # fmt: skip
    family = spec.get("family")
    families = ", ".join(FAMILIES)
    if family is not None and family not in FAMILIES:
        hint = _did_you_mean(str(family).lower(), list(FAMILIES))
        raise RegistryError("model registry {path}: [models.{key}] family '{family}' is not a family{hint}: one "
                            "of {known}", family=family, hint=hint, known=families, **where)  # fmt: skip
    if family is None and not Path(spec["source"]).exists():
        raise RegistryError("model registry {path}: [models.{key}]: {source} is not a local file or folder, so "
                            "its family cannot be read: give family = one of {known} (a hub id), or fix the path",
                            source=spec["source"], known=families, **where)  # fmt: skip
    for name in ("config", "label"):
        if name in spec and not isinstance(spec[name], str):
            raise RegistryError("model registry {path}: [models.{key}] {name} must be text in quotes", name=name,
                                **where)  # fmt: skip
    return BaseModelEntry(key, spec["source"], family, spec.get("config"), spec.get("label", ""))


def _did_you_mean(word: str, choices) -> str | MemberError:
    """`` (did you mean 'x'?)`` for the closest choice (translated where it is said), or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return MemberError(" (did you mean '{close}'?)", close=close[0]) if close else ""
