"""Headless Chromium for tests that look at a page as a person would: found on PATH, or installed with
apt-get where it is missing (Debian/Ubuntu, as root or through sudo)."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
]


def find() -> str | None:
    return next((p for p in map(shutil.which, NAMES) if p), None)


def install() -> str:
    """The path of a Chromium binary, installing the Debian package when there is none."""
    found = find()
    if found:
        return found
    if not shutil.which("apt-get"):
        raise RuntimeError("headless Chromium is needed and there is no apt-get to install it: install chromium")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    found = find()
    if not found:
        raise RuntimeError("apt-get installed chromium but no chromium binary is on PATH")
    return found


def render(binary: str, page: Path, profile: Path, screenshot: Path, width: int = 1366, height: int = 900) -> str:
    """The DOM Chromium builds from `page` (after loading it), and a screenshot of the first screen."""
    url = page.resolve().as_uri()
    common = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    subprocess.run(common + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return dom.stdout


class Page(HTMLParser):
    """What a reader sees in a report DOM: the cards, each plot's series and point counts, table rows."""

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.cards: list[dict[str, str]] = []
        self.plots: dict[str, dict[str, int]] = {}  # figure label -> series gid -> marker count
        self.tables: list[dict] = []  # {"heading": h, "columns": [...], "rows": [[cell text]]}
        self._stack: list[tuple[str, dict]] = []
        self._figure: str | None = None
        self._series: str | None = None
        self._series_depth = 0
        self._text: list[str] | None = None
        self._card_field: str | None = None
        self._heading = ""
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "figure":
            self._figure = a.get("aria-label", "")
            self.plots[self._figure] = {}
        elif (
            tag == "g"
            and self._figure is not None
            and self._series is None
            and (a.get("id") or "").startswith(("trend-", "validation-"))
        ):
            self._series, self._series_depth = a["id"], 0
            self.plots[self._figure][self._series] = 0
        elif tag == "g" and self._series is not None:
            self._series_depth += 1
        elif tag == "use" and self._series is not None:
            self.plots[self._figure][self._series] += 1
        elif tag == "div" and cls == "card":
            self.cards.append({})
        elif tag == "div" and cls in ("label", "value", "change") and self.cards:
            self._card_field, self._text = cls, []
        elif tag in ("h2", "h3"):
            self._text = []
        elif tag == "table":
            self.tables.append({"heading": self._heading, "columns": [], "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._text = []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "g" and self._series is not None:
            if self._series_depth == 0:
                self._series = None
            else:
                self._series_depth -= 1
        elif tag == "div" and self._card_field is not None:
            self.cards[-1][self._card_field] = "".join(self._text).strip()
            self._card_field, self._text = None, None
        elif tag in ("h2", "h3") and self._text is not None:
            self._heading, self._text = "".join(self._text).strip(), None
        elif tag in ("td", "th") and self._text is not None:
            table = self.tables[-1]
            text = "".join(self._text).strip()
            (table["columns"] if tag == "th" else table["rows"][-1]).append(text)
            self._text = None
        elif tag == "table":
            self.tables[-1]["rows"] = [r for r in self.tables[-1]["rows"] if r]

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def table(self, heading_start: str) -> dict:
        return next(t for t in self.tables if t["heading"].startswith(heading_start))
