"""The vessel view's chart: sessions per day as an inline SVG bar chart (no script).

Pure: numbers in, SVG text out. Bars are the vessel's sessions per UTC day (counted from
the batches received, see :class:`shore.store.ops.DayActivity`); the title of each bar
gives the day, the sessions, the batches and the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from shore.store.ops import DayActivity

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 180, 36, 22, 10


def activity_svg(days: Sequence[DayActivity]) -> str:
    """An SVG bar chart of ``days`` (oldest first); an empty series draws an empty frame."""
    count = max(1, len(days))
    peak = max((day.sessions for day in days), default=0)
    scale_top = max(1, peak)
    plot_w = WIDTH - PAD_LEFT - 4
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / count
    bar = max(1.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="sessions per day" class="chart">',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - 4}" '
        f'y2="{PAD_TOP + plot_h}" stroke="#888"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 8}" text-anchor="end" font-size="11">'
        f"{scale_top}</text>",
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + plot_h}" text-anchor="end" '
        'font-size="11">0</text>',
    ]
    for index, day in enumerate(days):
        height = plot_h * day.sessions / scale_top
        x = PAD_LEFT + index * slot + (slot - bar) / 2
        y = PAD_TOP + plot_h - height
        label = escape(
            f"{day.day}: {day.sessions} sessions, {day.batches} batches, {day.link_bytes:,} bytes"
        )
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
            f'fill="#2b6cb0"><title>{label}</title></rect>'
        )
        if (index % 7 == 0 and index < len(days) - 4) or index == len(days) - 1:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                f'font-size="10">{escape(day.day[5:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
