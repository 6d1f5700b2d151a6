"""Pins: a reviewed file in Git that names a model's production version, over the aliases.

A regulated team may need every production version to go through a reviewed commit,
while other teams keep shipping by moving the `champion` alias. A pinned model serves
its pinned version, alone: its `challenger` alias is ignored (no gate, no canary, no
traffic) and reported, and a pin that differs from `@champion` is reported too, so the
two sources of truth never drift apart silently. Unpinned models are untouched.

Pure: parsing the file, merging pins with aliases into the champions to serve, and
telling where a pin and the aliases disagree. The control actor reads the file and acts.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

PINS_KEY = "pins"


class PinsError(ValueError):
    """The file cannot be used as it is; the last good pins stay in force."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice: PyYAML would keep the last one silently,
    and a reviewer reading the first would approve a version that never serves."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                line = key_node.start_mark.line + 1
                raise PinsError(f"a key must be a plain value (line {line})")
            if key in seen:
                raise PinsError(f"'{key}' is given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_pins(text: str) -> dict[str, int]:
    """`pins: {model: version}` as a dict sorted by model; an empty file pins nothing."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PinsError(f"not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or set(document) - {PINS_KEY}:
        raise PinsError(f"expected a mapping with the one key '{PINS_KEY}'")
    pins = document.get(PINS_KEY) or {}
    if not isinstance(pins, dict):
        raise PinsError(f"'{PINS_KEY}' must map model names to version numbers")
    for name, version in pins.items():
        if not isinstance(name, str) or not name:
            raise PinsError(f"a model name must be a non-empty string (got {name!r:.40})")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise PinsError(
                f"the pin of '{name}' must be a registry version number (a positive integer)"
            )
    return dict(sorted(pins.items()))


def desired_champions(
    champions: dict[str, int],
    pins: dict[str, int],
    registered: set[str],
    serving: dict[str, int],
    unservable: set[tuple[str, int]],
) -> dict[str, int]:
    """The champion to serve per model: the pin where there is one, else `@champion`.

    A pinned version that cannot serve (missing from the registry, or failed its check)
    leaves the version that serves now in place: the last good one. A pinned model that
    serves nothing yet (a restarted control actor) serves `@champion` meanwhile, since a
    dark fraud model is worse than the alias's version while the pin is fixed. Pins of
    models the registry does not have are left out.
    """
    desired = dict(champions)
    for name, version in pins.items():
        if name not in registered:
            continue
        if (name, version) not in unservable:
            desired[name] = version
        elif name in serving:
            desired[name] = serving[name]
    return desired


@dataclass(frozen=True)
class PinCheck:
    """One pin held against the registry's aliases of its model."""

    model: str
    version: int
    champion_alias: int | None
    challenger_alias: int | None
    registered: bool = True

    @property
    def agrees(self) -> bool:
        return self.registered and self.champion_alias == self.version

    @property
    def disagreement(self) -> str | None:
        """Why pin and aliases differ, or None when they agree."""
        if not self.registered:
            return f"pinned to v{self.version}, but the registry has no model '{self.model}'"
        if self.champion_alias is None:
            return f"pinned to v{self.version}; the model has no @champion"
        if self.champion_alias != self.version:
            return f"pinned to v{self.version}; @champion is v{self.champion_alias}"
        return None

    @property
    def ignored_challenger(self) -> int | None:
        """A `challenger` the pin keeps from traffic (None: none, or it is the pin)."""
        if self.challenger_alias in (None, self.version):
            return None
        return self.challenger_alias


def check_pins(pins: dict[str, int], aliases: dict[str, dict[str, int]]) -> dict[str, PinCheck]:
    """Every pin against its model's aliases, by model name."""
    return {
        name: PinCheck(
            name,
            version,
            aliases.get(name, {}).get("champion"),
            aliases.get(name, {}).get("challenger"),
            name in aliases,
        )
        for name, version in sorted(pins.items())
    }


def pin_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int | None]:
    """Models whose pin was set, moved (the new version) or removed (None)."""
    return {
        name: after.get(name)
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    }
