"""The loss-curve PNG, drawn with PIL (no matplotlib): axes, step ticks, loss ticks, a legend.

Rows of metrics.jsonl are {"step", "loss", optional "loss_video", "loss_audio", ...}; rows without a step or with a
non-finite value are skipped for that series, a half-written last line is ignored, and a step logged twice (a resumed
run) keeps its last value. Long noisy runs draw the raw values faintly under an exponential moving average.
"""

from __future__ import annotations

import math
import os

from .. import metrics_file

SERIES = (("loss", (31, 119, 180)), ("loss_video", (255, 127, 14)), ("loss_audio", (44, 160, 44)))
_SMOOTH_ABOVE = 50  # points per series beyond which an EMA is drawn over the faint raw curve


def read_series(metrics_jsonl: str) -> dict[str, list[tuple[float, float]]]:
    """{series: [(step, value), ...] sorted by step} for the series in SERIES that have any finite value."""
    data: dict[str, dict[float, float]] = {k: {} for k, _ in SERIES}
    for row in metrics_file.read_rows(metrics_jsonl):
        step = row.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not math.isfinite(step):
            continue
        for key, _ in SERIES:
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                data[key][float(step)] = float(v)
    return {k: sorted(v.items()) for k, v in data.items() if v}


def nice_ticks(lo: float, hi: float, target: int = 6, min_step: float = 0.0) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps, at least min_step apart) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        t = round(first + k * step, 12)  # no float drift (0.6000000000000001)
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        k += 1
    return ticks


def _fmt(v: float, step: float) -> str:
    """A tick label with as many decimals as the tick spacing needs."""
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-4):
        return f"{v:.3g}"
    if step <= 0:
        return f"{v:g}"
    exp = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exp) + (1 if step < 10 and abs(step / 10 ** exp - 2.5) < 1e-6 else 0)
    return f"{v:.{decimals}f}"


def _ema(values: list[float], span: float) -> list[float]:
    alpha = 2.0 / (span + 1.0)
    out, acc = [], None
    for v in values:
        acc = v if acc is None else acc + alpha * (v - acc)
        out.append(acc)
    return out


def _faint(color: tuple[int, int, int], amount: float = 0.7) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * amount)) for c in color)


def loss_curve_png(metrics_jsonl: str, png_path: str, width: int = 800, height: int = 400) -> None:
    """Draw the loss curves of metrics_jsonl into png_path (width x height RGB PNG, written atomically)."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default()
    series = read_series(metrics_jsonl)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 64, width - 16, 16, height - 44
    pw, ph = right - left, bottom - top

    points = [p for pts in series.values() for p in pts]
    if points:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        x0, x1 = min(xs), max(xs)
        if x1 == x0:
            x0, x1 = x0 - 1, x1 + 1
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.05 if y1 > y0 else max(abs(y0) * 0.1, 0.1)
        y0, y1 = y0 - pad, y1 + pad
    else:
        x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * ph

    # grid + ticks
    xt = [t for t in nice_ticks(x0, x1, 8, min_step=1.0) if x0 <= t <= x1]
    yt = [t for t in nice_ticks(y0, y1, 6) if y0 <= t <= y1]
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for t in xt:
        x = px(t)
        draw.line([(x, top), (x, bottom)], fill=(232, 232, 232))
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        label = _fmt(t, xstep)
        draw.text((x - draw.textlength(label, font=font) / 2, bottom + 6), label, fill="black", font=font)
    for t in yt:
        y = py(t)
        draw.line([(left, y), (right, y)], fill=(232, 232, 232))
        draw.line([(left - 4, y), (left, y)], fill="black")
        label = _fmt(t, ystep)
        draw.text((left - 6 - draw.textlength(label, font=font), y - 7), label, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left + pw / 2 - draw.textlength("step", font=font) / 2, bottom + 24), "step", fill="black",
              font=font)
    # The y-axis title, rotated.
    title = Image.new("RGB", (int(draw.textlength("loss", font=font)) + 4, 16), "white")
    ImageDraw.Draw(title).text((2, 1), "loss", fill="black", font=font)
    title = title.rotate(90, expand=True)
    img.paste(title, (4, top + ph // 2 - title.size[1] // 2))

    if not points:
        msg = "no loss values yet"
        draw.text((left + pw / 2 - draw.textlength(msg, font=font) / 2, top + ph / 2 - 7), msg, fill=(120, 120, 120),
                  font=font)

    # curves
    colors = dict(SERIES)
    for key, pts in series.items():
        color = colors[key]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(pts) > _SMOOTH_ABOVE:
            draw.line(xy, fill=_faint(color), width=1)
            smooth = _ema([y for _, y in pts], span=max(5.0, len(pts) / 20))
            draw.line([(px(x), py(y)) for (x, _), y in zip(pts, smooth)], fill=color, width=2, joint="curve")
        elif len(xy) > 1:
            draw.line(xy, fill=color, width=2, joint="curve")
        else:
            x, y = xy[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)

    # legend (top right, inside the plot)
    if series:
        rows = list(series)
        lw = max(draw.textlength(k, font=font) for k in rows) + 36
        lh = 16 * len(rows) + 8
        lx, ly = right - lw - 8, top + 8
        draw.rectangle([lx, ly, lx + lw, ly + lh], fill="white", outline=(160, 160, 160))
        for j, key in enumerate(rows):
            yy = ly + 12 + 16 * j
            draw.line([(lx + 6, yy), (lx + 24, yy)], fill=colors[key], width=3)
            draw.text((lx + 30, yy - 7), key, fill="black", font=font)

    png_path = str(png_path)
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(png_path)), f".{os.path.basename(png_path)}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, png_path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
