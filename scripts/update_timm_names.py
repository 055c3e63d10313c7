"""Rewrite src/medauc/timm_models.txt from the installed timm (after upgrading the timm pin).

    .venv/bin/python scripts/update_timm_names.py
"""

from pathlib import Path

import timm

path = Path(__file__).resolve().parents[1] / "src" / "medauc" / "timm_models.txt"
names = timm.list_models()
path.write_text(
    f"# timm {timm.__version__}: timm.list_models(), for checking model names without importing torch "
    "(tests/test_validate.py keeps it in step)\n" + "\n".join(names) + "\n",
    encoding="utf-8",
)
print(f"wrote {len(names)} names to {path}")
