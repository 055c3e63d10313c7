"""Open a report in headless Chromium: console messages, the images it holds, a screenshot.

Used by the tests and by anyone checking a report on a machine without a screen.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medauc.errors import MedaucError

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]


@dataclass
class BrowserCheck:
    console: list[str] = field(default_factory=list)  # every console message the page logged
    images: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each decoded figure
    dom_chars: int = 0
    screenshot: Path | None = None


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_report(html_path: str | Path, screenshot: str | Path | None = None, width: int = 1200, height: int = 2400, timeout: int = 120) -> BrowserCheck:
    """Load ``html_path`` in headless Chromium; decode every embedded PNG it shows."""
    from PIL import Image

    exe = find_chromium()
    if exe is None:
        raise MedaucError("no Chromium found; install it (Debian: apt-get install chromium) to check reports in a browser")
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, *_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout)
    result = BrowserCheck(dom_chars=len(dom.stdout))
    result.console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    for data in re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', dom.stdout):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            result.images.append(im.size)
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([exe, *_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                            f"--window-size={width},{height}", "--hide-scrollbars", url],
                           capture_output=True, text=True, timeout=timeout)
        result.screenshot = shot if shot.exists() else None
    return result
