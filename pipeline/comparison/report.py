"""One self-contained HTML file: the table and every chart inlined (no links out, opens offline)."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
td:nth-child(-n+3) { text-align: left; }
tr.best { background: #e6f4e6; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
.meta { color: #666; font-size: 13px; }
.caution { background: #fff4d6; border-left: 4px solid #e0a800; padding: 4px 8px; }
"""


def _inline_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def write_report(
    path: Path,
    title: str,
    context: list[str],
    table_html: str,
    summary: str,
    plots: dict[str, Path],
    caution: str = "",
) -> Path:
    """``context``: lines saying what was compared; ``plots``: heading -> PNG file; ``caution``: a line above the
    table (what makes the runs unlike), if any."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(f"<h2>{html.escape(heading)}</h2>{_inline_png(png)}" for heading, png in plots.items())
    meta = "".join(f"<div>{html.escape(line)}</div>" for line in [*context, f"written {now}"])
    warning = f"<p class='caution'>{html.escape(caution)}</p>" if caution else ""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><div class='meta'>{meta}</div>"
        f"<p>{html.escape(summary)}</p>{warning}{table_html}{sections}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
