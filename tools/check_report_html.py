"""Open a report.html in real headless Chromium: the page renders, every embedded plot
decodes (the page's own script sets data-images-ok), and nothing loads from outside.

    apt-get install chromium        # once (Debian package)
    .venv/bin/python tools/check_report_html.py out/report/report.html [--screenshot shot.png]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("chromium not found: apt-get install chromium")


def check(page: Path, screenshot: Path | None) -> list[str]:
    """Problems found (empty when the page is fine)."""
    problems = []
    text = page.read_text()
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', text)
    if external:
        problems.append(f"external resources: {external[:3]}")
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium(), *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*base, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        if 'data-images-ok="yes"' not in dom:
            problems.append("plots did not decode in Chromium (data-images-ok != yes)")
        if dom.count("<img") < 2:
            problems.append(f"expected the latency and Pareto plots, found {dom.count('<img')} images")
        if screenshot:
            subprocess.run(
                [
                    *base,
                    f"--screenshot={screenshot.resolve()}",
                    "--window-size=1200,1600",
                    page.resolve().as_uri(),
                ],
                capture_output=True,
                timeout=120,
                check=True,
            )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    problems = check(args.page, args.screenshot)
    print("\n".join(problems) or f"{args.page}: renders in Chromium, plots decoded, self-contained")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
