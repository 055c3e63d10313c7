from pathlib import Path

from medauc.config_reference import markdown, rows


def test_every_key_is_documented():
    missing = [key for key, tp, _, meaning in rows() if tp != "section" and not meaning]
    assert missing == []


def test_readme_reference_matches_the_code():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown() in readme, "run: python scripts/update_readme_config.py"
