"""Charts drawn on the server as inline SVG: no script, no library, readable offline."""
from __future__ import annotations

from markupsafe import Markup, escape

ACCENT = "#5b9dff"
OK = "#38c172"
BAD = "#e3555f"
DIM = "#9aa3b2"
LINE = "#2a2f3a"


def bars(points: list[tuple[str, float]], *, limit: float | None = None, limit_label: str = "budget", money: bool = True,
         width: int = 900, height: int = 220) -> Markup:
    """Vertical bars (one per label, e.g. per day) with an optional dashed limit line."""
    left, bottom, top = 52, 26, 14
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([v for _, v in points] + [limit or 0.0, 1e-9])
    scale = plot_h / (peak * 1.1)
    n = max(len(points), 1)
    slot = plot_w / n
    bar_w = max(2.0, slot * 0.72)
    out = [_open(width, height)]
    for frac in (0, 0.5, 1) if peak > 1e-9 else (0,):
        value = peak * 1.1 * frac
        y = top + plot_h - value * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="{LINE}" stroke-width="1"/>')
        out.append(_text(left - 6, y + 4, _fmt(value, money), anchor="end"))
    every = max(1, n // 10)
    for i, (label, value) in enumerate(points):
        x = left + i * slot + (slot - bar_w) / 2
        h = value * scale
        over = limit is not None and value > limit + 1e-9
        out.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{max(h, 0):.1f}" rx="2" '
            f'fill="{BAD if over else ACCENT}"><title>{escape(label)}: {escape(_fmt(value, money))}</title></rect>'
        )
        if i % every == 0 or i == n - 1:
            out.append(_text(x + bar_w / 2, height - 8, label, anchor="middle"))
    if peak <= 1e-9:
        out.append(_text(left + plot_w / 2, top + plot_h / 2, "nothing spent in this window", anchor="middle", size=13))
    if limit is not None:
        y = top + plot_h - limit * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="{BAD}" stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(_text(width - 12, y - 5, f"{limit_label} {_fmt(limit, money)}", anchor="end", fill=BAD))
    out.append("</svg>")
    return Markup("".join(out))


def hbars(rows: list[tuple[str, float, str]], *, limit: float | None = None, limit_label: str = "budget",
          percent: bool = False, width: int = 640) -> Markup:
    """Horizontal bars: (label, value, note) per row; values are dollars, or fractions with `percent`."""
    row_h, label_w, note_w = 28, 150, 120
    height = max(1, len(rows)) * row_h + 12
    plot_w = width - label_w - note_w
    peak = 1.0 if percent else max([v for _, v, _ in rows] + [limit or 0.0, 1e-9]) * 1.05
    out = [_open(width, height)]
    for i, (label, value, note) in enumerate(rows):
        y = 6 + i * row_h
        w = plot_w * (value / peak)
        over = limit is not None and value > limit + 1e-9
        colour = (OK if value >= 0.9 else ACCENT if value >= 0.6 else BAD) if percent else (BAD if over else ACCENT)
        out.append(_text(label_w - 8, y + 17, _clip(label, 20), anchor="end"))
        out.append(f'<rect x="{label_w}" y="{y + 4}" width="{plot_w}" height="{row_h - 10}" rx="3" fill="{LINE}" opacity=".5"/>')
        out.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 1.5):.1f}" height="{row_h - 10}" rx="3" fill="{colour}">'
            f"<title>{escape(label)}: {escape(note)}</title></rect>"
        )
        out.append(_text(label_w + plot_w + 8, y + 17, note))
    if limit is not None and not percent:
        x = label_w + plot_w * (limit / peak)
        out.append(f'<line x1="{x:.1f}" y1="2" x2="{x:.1f}" y2="{height - 4}" stroke="{BAD}" stroke-dasharray="5 4" stroke-width="1.5"/>')
        out.append(_text(x - 4, height - 1, f"{limit_label} {_fmt(limit, True)}", anchor="end", fill=BAD, size=10))
    out.append("</svg>")
    return Markup("".join(out))


def _open(width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" font-family="system-ui, sans-serif">'
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", fill: str = DIM, size: int = 11) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}">{escape(text)}</text>'


def _fmt(value: float, money: bool) -> str:
    if not money:
        return f"{value:,.0f}"
    return f"${value:,.2f}" if value >= 0.1 or value == 0 else f"${value:.3f}"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
