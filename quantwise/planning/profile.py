"""Calibrated planner profiles: efficiency values fitted per GPU x engine by `quantwise calibrate`,
saved as JSON and taken by `plan` / `recommend --profile FILE`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import QuantwiseError
from .assumptions import PlannerAssumptions

PROFILE_KIND = "quantwise-planner-profile"
PROFILE_VERSION = 1

Profile = dict[tuple[str, str], dict[str, float]]


def save_profile(path: str | Path, entries: list[dict]) -> None:
    """entries: {"gpu", "engine", "assumptions": {name: value}, ...fit statistics}."""
    payload = {"kind": PROFILE_KIND, "version": PROFILE_VERSION, "entries": entries}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def load_profile(path: str | Path | None) -> Profile | None:
    if path is None:
        return None
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantwiseError(f"no such profile: {path}") from None
    except json.JSONDecodeError as exc:
        raise QuantwiseError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(payload, dict) or payload.get("kind") != PROFILE_KIND:
        raise QuantwiseError(f"{path} is not a quantwise planner profile (write one with `quantwise calibrate`)")
    if payload.get("version") != PROFILE_VERSION:
        raise QuantwiseError(f"{path}: profile version {payload.get('version')} is not {PROFILE_VERSION}")
    known = {f.name for f in dataclasses.fields(PlannerAssumptions)}
    profile: Profile = {}
    for entry in payload.get("entries", []):
        values = entry.get("assumptions", {})
        unknown = sorted(set(values) - known)
        if unknown:
            raise QuantwiseError(f"{path}: unknown assumption(s) {', '.join(unknown)}")
        profile[(str(entry["gpu"]).lower(), str(entry["engine"]).lower())] = {k: float(v) for k, v in values.items()}
    return profile
