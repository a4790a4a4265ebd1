"""Where benchmark scripts leave their figures."""

import json
from pathlib import Path
from typing import Any


def write_results(path: str, result: dict[str, Any]) -> None:
    """Write the figures as JSON (creating the folder) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
