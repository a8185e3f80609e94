"""Shared output of the benchmark scripts: an aligned ``name  value`` table, optionally also a JSON file."""

from __future__ import annotations

import json


def report(figures: dict, json_path: str | None = None, extra: dict | None = None) -> None:
    """Print ``figures`` one per line (dict values as ``k v, …``) and write them (plus ``extra``) to ``json_path``."""
    width = max(map(len, figures))
    for name, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        print(f"{name:<{width}}  {value}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({**figures, **(extra or {})}, f, indent=2)
