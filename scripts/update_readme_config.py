"""Rewrite the README's configuration reference from the code: python scripts/update_readme_config.py"""

import re
from pathlib import Path

from medauc.config_reference import markdown

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
new = re.sub(r"(<!-- config-reference:start -->\n).*?(<!-- config-reference:end -->)",
             lambda m: m.group(1) + markdown() + "\n" + m.group(2), text, flags=re.S)
readme.write_text(new)
