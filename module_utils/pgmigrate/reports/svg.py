"""Charts as inline SVG, plain Python: drawn by the browser from the markup alone (no script, no external file),
each mark with a <title> that the browser shows as a tooltip. Meant to sit inside an HTML page (the HTML parser
gives <svg> its namespace: no xmlns, so the page names no URL at all).

    lanes_chart(lanes, ...)      a timeline: one lane per worker (or per table), a bar per job coloured by its step
    bar_chart(rows, ...)         horizontal bars with their values (the phases of a run)
    status_grid(rows, columns)   a table x check grid, one cell per status (the validation at a glance)

Every function returns a str of SVG markup whose text is escaped; sizes and durations are written with
common/units.py."""

from html import escape

from ..common.units import human_duration

FONT = "font-family=\"-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\""
# The steps of a copy, in the order a table goes through them, and their colours.
STEP_COLOURS = {"data": "#2f81f7", "indexes": "#8250df", "constraints": "#d4760a", "analyze": "#8c959f",
                "large objects": "#1a7f37", "post-data": "#bf3989", "validation": "#0e8a8a"}
STATUS_COLOURS = {"pass": "#2da44e", "warn": "#d4a72c", "fail": "#cf222e", "skip": "#d0d7de"}
GRID = "#d8dee4"
TEXT = "#1f2328"
MUTED = "#57606a"


def _e(value):
    return escape("" if value is None else str(value), quote=True)


def _nice_step(span, ticks=8):
    """A round tick interval giving about `ticks` ticks over span seconds."""
    raw = max(span, 0.001) / ticks
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                 7200, 14400, 28800, 86400):
        if step >= raw:
            return step
    return 86400 * (int(raw // 86400) + 1)


def _clip(text, width_px, char_px=6.6):
    """text cut to fit width_px (an ellipsis when cut); "" when not even 3 characters fit."""
    fits = int(width_px // char_px)
    if fits < 3:
        return ""
    return text if len(text) <= fits else text[:fits - 1] + "…"


def lanes_chart(lanes, width=1100, lane_height=26, label_width=150, colours=None, title="", bands=(), end=None):
    """lanes: [(label, [{"start", "end", "step", "label", "tip"}])], times in seconds from 0. A bar per
    segment at its time, coloured by its step, its label inside when it fits, its tip as the tooltip.
    bands: [(name, start, end)] drawn behind the lanes, named above them (the run's phases). end: the time
    axis' end (default: the last segment's or band's), so that two charts can share one axis."""
    colours = colours or STEP_COLOURS
    end = end or max([s["end"] for _, segments in lanes for s in segments] + [b[2] for b in bands] + [0.001])
    plot = width - label_width - 20
    scale = plot / end
    top, axis = (24 if title else 6) + (18 if bands else 0), 22
    height = top + len(lanes) * lane_height + axis + 30
    out = [f'<svg class="chart timeline" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title or "timeline")}" {FONT} '
           f'font-size="12">']
    if title:
        out.append(f'<text x="0" y="14" font-weight="600" fill="{TEXT}">{_e(title)}</text>')
    bottom = top + len(lanes) * lane_height
    for index, (name, start, stop) in enumerate(bands):
        x, w = label_width + start * scale, max((stop - start) * scale, 0.5)
        out.append(f'<rect x="{x:.1f}" y="{top - 18}" width="{w:.1f}" height="{bottom - top + 18}" '
                   f'fill="{"#eef4fc" if index % 2 == 0 else "#f8fafc"}"><title>{_e(name)}: '
                   f'{_e(human_duration(start))} → {_e(human_duration(stop))} '
                   f'({_e(human_duration(stop - start))})</title></rect>')
        text = _clip(name, w - 4, char_px=6)
        if text:
            out.append(f'<text x="{x + 3:.1f}" y="{top - 5}" font-size="11" fill="{MUTED}">{_e(text)}</text>')
    step = _nice_step(end)
    tick = 0.0
    while tick <= end + 1e-9:
        x = label_width + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" fill="{MUTED}">'
                   f'{_e(human_duration(tick))}</text>')
        tick += step
    for index, (label, segments) in enumerate(lanes):
        y = top + index * lane_height
        out.append(f'<line x1="{label_width}" y1="{y + lane_height}" x2="{width - 20}" y2="{y + lane_height}" '
                   f'stroke="{GRID}" stroke-dasharray="2,3"/>')
        out.append(f'<text x="{label_width - 8}" y="{y + lane_height / 2 + 4:.1f}" text-anchor="end" '
                   f'fill="{TEXT}">{_e(_clip(str(label), label_width - 10) or str(label)[:3])}</text>')
        for segment in segments:
            x = label_width + segment["start"] * scale
            w = max((segment["end"] - segment["start"]) * scale, 1.5)
            colour = colours.get(segment.get("step"), "#6e7781")
            out.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{lane_height - 6}" '
                       f'rx="2" fill="{colour}" stroke="#ffffff" stroke-width="0.5">'
                       f'<title>{_e(segment.get("tip") or segment.get("label"))}</title></rect>')
            text = _clip(str(segment.get("label") or ""), w - 6)
            if text:
                out.append(f'<text x="{x + 4:.1f}" y="{y + lane_height / 2 + 4:.1f}" fill="#ffffff" '
                           f'pointer-events="none">{_e(text)}</text>')
    out.append(f'<line x1="{label_width}" y1="{bottom}" x2="{width - 20}" y2="{bottom}" stroke="{MUTED}"/>')
    used = [s for s in colours if any(seg.get("step") == s for _, segs in lanes for seg in segs)]
    x = label_width
    for name in used:
        out.append(f'<rect x="{x}" y="{bottom + 24}" width="12" height="12" rx="2" fill="{colours[name]}"/>')
        out.append(f'<text x="{x + 16}" y="{bottom + 34}" fill="{TEXT}">{_e(name)}</text>')
        x += 30 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(rows, width=1100, bar_height=20, label_width=150, title="", colours=None):
    """rows: [(label, seconds)]: a bar per row, its length the share of the largest, its value written beside
    it with human_duration and its share of the total."""
    colours = colours or {}
    total = sum(value for _, value in rows) or 1
    largest = max([value for _, value in rows] + [0.001])
    plot = width - label_width - 170
    top = 24 if title else 6
    height = top + len(rows) * bar_height + 8
    out = [f'<svg class="chart bars" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title or "bars")}" {FONT} font-size="12">']
    if title:
        out.append(f'<text x="0" y="14" font-weight="600" fill="{TEXT}">{_e(title)}</text>')
    for index, (label, value) in enumerate(rows):
        y = top + index * bar_height
        w = max(value / largest * plot, 1.5)
        text = f"{human_duration(value)} ({value / total * 100:.0f}%)"
        out.append(f'<text x="{label_width - 8}" y="{y + bar_height / 2 + 4:.1f}" text-anchor="end" '
                   f'fill="{TEXT}">{_e(_clip(str(label), label_width - 12))}</text>')
        out.append(f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{bar_height - 6}" '
                   f'rx="2" fill="{colours.get(label, "#2f81f7")}"><title>{_e(label)}: {_e(text)}</title></rect>')
        out.append(f'<text x="{label_width + w + 6:.1f}" y="{y + bar_height / 2 + 4:.1f}" fill="{MUTED}">'
                   f'{_e(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def status_grid(rows, columns, cell=22, label_width=230, title=""):
    """rows: [(label, {column: {"status", "tip"}})]; columns: [name]. A cell per row and column coloured by
    its status (pass, warn, fail, skip; blank where the check says nothing about the row), the tip as tooltip."""
    # The column names stand at -55°: as high as the longest one needs (capped).
    header = min(110, 14 + int(max([len(name) for name in columns] + [3]) * 6.6 * 0.82))
    top = (24 if title else 6) + header
    width = label_width + len(columns) * cell + 10
    height = top + len(rows) * cell + 34
    width = max(width, label_width + 420)
    out = [f'<svg class="chart grid" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title or "grid")}" {FONT} font-size="12">']
    if title:
        out.append(f'<text x="0" y="14" font-weight="600" fill="{TEXT}">{_e(title)}</text>')
    for index, name in enumerate(columns):
        x = label_width + index * cell + cell / 2 + 4
        out.append(f'<text transform="translate({x:.1f},{top - 6}) rotate(-55)" fill="{TEXT}">'
                   f'{_e(_clip(name, 110 * 1.15) or name[:3])}</text>')
    for row, (label, cells) in enumerate(rows):
        y = top + row * cell
        out.append(f'<text x="{label_width - 8}" y="{y + cell / 2 + 4:.1f}" text-anchor="end" fill="{TEXT}">'
                   f'{_e(_clip(str(label), label_width - 10) or str(label)[:3])}<title>{_e(label)}</title></text>')
        for index, name in enumerate(columns):
            x = label_width + index * cell
            found = cells.get(name)
            if not found:
                out.append(f'<rect x="{x + 2}" y="{y + 2}" width="{cell - 4}" height="{cell - 4}" rx="3" '
                           f'fill="none" stroke="{GRID}"/>')
                continue
            colour = STATUS_COLOURS.get(found.get("status"), STATUS_COLOURS["skip"])
            out.append(f'<rect class="cell {_e(found.get("status"))}" x="{x + 2}" y="{y + 2}" width="{cell - 4}" '
                       f'height="{cell - 4}" rx="3" fill="{colour}"><title>{_e(found.get("tip"))}</title></rect>')
    legend_y = top + len(rows) * cell + 20
    x = label_width
    for status in ("pass", "warn", "fail"):
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" rx="2" '
                   f'fill="{STATUS_COLOURS[status]}"/>')
        out.append(f'<text x="{x + 16}" y="{legend_y}" fill="{TEXT}">{status}</text>')
        x += 60
    out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" rx="2" fill="none" stroke="{GRID}"/>')
    out.append(f'<text x="{x + 16}" y="{legend_y}" fill="{TEXT}">not about this table</text>')
    out.append("</svg>")
    return "\n".join(out)
