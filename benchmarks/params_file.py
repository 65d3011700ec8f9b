"""Reading a params file: the tuned settings a spec's runs apply, by ``<algorithm>/<dataset>/<label>``.

Apart from benchmarks.tuning (which writes these files) so that a sweep or a table can read tuned
settings on a machine without Optuna (e.g. a lent GPU machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from algorithms import ConfigError


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The params file as a dict, e.g. for a sweep (``{key: {ExperimentConfig fields}}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (tune first: scripts/sweep.py <spec> --tune N, or scripts/tune.py)")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError(f"params file {path} must map '<algorithm>/<dataset>/<label>' to config fields")
    return values
