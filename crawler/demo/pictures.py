"""Pictures for the demo site: landscapes, planets and geometric prints, drawn in spans.

Every shape is drawn one horizontal span per row (a slice assignment, done in
C), never pixel by pixel, so a 320x200 picture takes about a millisecond.
The same seed always gives the same picture.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

Colour = tuple[int, int, int]


def mix(a: Colour, b: Colour, t: float) -> Colour:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t),
            round(a[2] + (b[2] - a[2]) * t))


def hsv(hue: float, saturation: float, value: float) -> Colour:
    """A colour from hue (0..1, wrapping), saturation and value (0..1)."""
    hue = (hue % 1.0) * 6
    i, f = int(hue), hue - int(hue)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), \
        value * (1 - saturation * (1 - f))
    r, g, b = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value),
               (value, p, q)][i % 6]
    return round(r * 255), round(g * 255), round(b * 255)


class Canvas:
    """Rows of pixels, ``depth`` bytes each: 3 for RGB, 1 for palette indices."""

    def __init__(self, width: int, height: int, background: bytes, depth: int = 3) -> None:
        self.width, self.height, self.depth = width, height, depth
        self.rows = [bytearray(background * width) for _ in range(height)]

    def span(self, y: int, x0: float, x1: float, pixel: bytes) -> None:
        """Fill row ``y`` from ``x0`` to ``x1`` (clipped to the canvas)."""
        left, right = max(0, round(x0)), min(self.width, round(x1))
        if 0 <= y < self.height and right > left:
            self.rows[y][left * self.depth:right * self.depth] = pixel * (right - left)

    def vertical_gradient(self, top: Colour, bottom: Colour) -> None:
        for y in range(self.height):
            self.rows[y][:] = bytes(mix(top, bottom, y / max(1, self.height - 1))) * self.width

    def disc(self, cx: float, cy: float, radius: float, pixel: bytes) -> None:
        for y in range(max(0, int(cy - radius)), min(self.height, int(cy + radius) + 1)):
            half = radius * radius - (y + 0.5 - cy) ** 2
            if half > 0:
                half = math.sqrt(half)
                self.span(y, cx - half, cx + half, pixel)

    def polygon(self, points: list[tuple[float, float]], pixel: bytes) -> None:
        """A convex polygon: one span per row between its leftmost and rightmost edge."""
        top = max(0, int(min(y for _, y in points)))
        bottom = min(self.height, int(max(y for _, y in points)) + 1)
        if bottom <= top:
            return
        lefts = [float("inf")] * (bottom - top)
        rights = [float("-inf")] * (bottom - top)
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
            if y0 == y1:
                continue
            slope = (x1 - x0) / (y1 - y0)
            first = max(top, math.ceil(min(y0, y1) - 0.5))
            last = min(bottom - 1, math.ceil(max(y0, y1) - 0.5) - 1)
            for y in range(first, last + 1):
                x = x0 + (y + 0.5 - y0) * slope
                row = y - top
                lefts[row] = min(lefts[row], x)
                rights[row] = max(rights[row], x)
        for row, (left, right) in enumerate(zip(lefts, rights, strict=True)):
            if right > left:
                self.span(top + row, left, right, pixel)


def landscape(canvas: Canvas, rng: random.Random) -> None:
    """A sky at some hour, its sun or moon, ranges of mountains fading into the distance."""
    hue = rng.random()
    sky_top, sky_low = hsv(hue, 0.6, 0.35 + 0.3 * rng.random()), hsv(hue + 0.12, 0.5, 0.95)
    canvas.vertical_gradient(sky_top, sky_low)
    w, h = canvas.width, canvas.height
    canvas.disc(rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.45) * h,
                rng.uniform(0.05, 0.12) * min(w, h) + 4, bytes(hsv(hue + 0.15, 0.25, 1.0)))
    layers = 3
    for layer in range(layers):
        colour = mix(sky_low, hsv(hue + 0.5, 0.5, 0.2), (layer + 1) / layers)
        base = h * (0.55 + 0.13 * layer)
        x = -rng.uniform(0, 0.2) * w
        while x < w:
            width = rng.uniform(0.25, 0.6) * w
            peak = base - rng.uniform(0.1, 0.3) * h
            canvas.polygon([(x, h + 1), (x + width / 2, peak), (x + width, h + 1)],
                           bytes(colour))
            if layer == 0 and peak < h * 0.4:  # snow on the highest far peaks
                snow = (base - peak) * 0.25
                canvas.polygon([(x + width / 2 - width * snow / (2 * (h + 1 - peak)), peak + snow),
                                (x + width / 2, peak),
                                (x + width / 2 + width * snow / (2 * (h + 1 - peak)), peak + snow)],
                               bytes(mix(colour, (255, 255, 255), 0.8)))
            x += width * rng.uniform(0.4, 0.8)
        canvas.polygon([(0, base + 0.1 * h), (w, base + 0.1 * h), (w, h + 1), (0, h + 1)],
                       bytes(colour))


def planet(canvas: Canvas, rng: random.Random) -> None:
    """A shaded planet, perhaps with a moon, on a starry night."""
    w, h = canvas.width, canvas.height
    canvas.vertical_gradient((4, 6, 20), (20, 14, 40))
    for _ in range(w * h // 400):
        x, y = rng.randrange(w), rng.randrange(h)
        canvas.span(y, x, x + 1 + rng.random(), bytes(hsv(rng.random(), 0.2, rng.uniform(.5, 1))))
    hue = rng.random()
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    radius = rng.uniform(0.25, 0.38) * min(w, h)
    dark, light = hsv(hue, 0.7, 0.18), hsv(hue + 0.05, 0.45, 1.0)
    steps = 16  # discs ever smaller and brighter, towards the light
    for step in range(steps):
        t = step / steps
        canvas.disc(cx - t * radius * 0.35, cy - t * radius * 0.35, radius * (1 - t * 0.85),
                    bytes(mix(dark, light, t ** 0.8)))
    if rng.random() < 0.6:
        mx, my = cx + radius * 1.35, cy - radius * 0.8
        canvas.disc(mx, my, radius * 0.16, bytes(hsv(hue + 0.5, 0.2, 0.75)))


def geometric(canvas: Canvas, rng: random.Random, colours: list[bytes]) -> None:
    """A print of overlapping discs, rings, bars and triangles in ``colours``."""
    w, h = canvas.width, canvas.height
    background = colours[0]
    for y in range(h):
        canvas.span(y, 0, w, background)
    for _ in range(rng.randint(6, 11)):
        colour = rng.choice(colours[1:])
        kind = rng.random()
        cx, cy, size = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.35) * min(w, h)
        if kind < 0.3:
            canvas.disc(cx, cy, size, colour)
        elif kind < 0.45:
            canvas.disc(cx, cy, size, colour)
            canvas.disc(cx, cy, size * 0.6, rng.choice(colours))
        elif kind < 0.7:
            angle = rng.uniform(0, math.pi)
            dx, dy = math.cos(angle) * size * 1.6, math.sin(angle) * size * 1.6
            nx, ny = -dy * 0.2, dx * 0.2
            canvas.polygon([(cx - dx - nx, cy - dy - ny), (cx + dx - nx, cy + dy - ny),
                            (cx + dx + nx, cy + dy + ny), (cx - dx + nx, cy - dy + ny)], colour)
        else:
            turn = rng.uniform(0, 2 * math.pi)
            canvas.polygon([(cx + size * math.cos(turn + k * 2 * math.pi / 3),
                             cy + size * math.sin(turn + k * 2 * math.pi / 3)) for k in range(3)],
                           colour)


def palette(rng: random.Random, count: int = 6) -> list[Colour]:
    """Colours that go together: one hue family, a contrasting accent, a pale ground."""
    hue = rng.random()
    ground = hsv(hue + 0.5, 0.08, 0.97)
    shades = [hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95))
              for _ in range(count - 2)]
    return [ground, *shades, hsv(hue + 0.5, 0.85, 0.9)]


def svg_print(width: int, height: int, rng: random.Random) -> bytes:
    """A geometric print as an SVG document: gradient ground, discs, rings and bars."""
    colours = ["#%02x%02x%02x" % colour for colour in palette(rng)]  # noqa: UP031 - bytes fmt
    shapes = []
    for _ in range(rng.randint(7, 12)):
        colour, x, y = rng.choice(colours[1:]), rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.08, 0.3) * min(width, height)
        kind = rng.random()
        if kind < 0.4:
            shapes.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" fill="{colour}" '
                          f'fill-opacity="{rng.uniform(0.6, 1):.2f}"/>')
        elif kind < 0.6:
            shapes.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" fill="none" '
                          f'stroke="{colour}" stroke-width="{size * 0.3:.1f}"/>')
        else:
            shapes.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{size * 2:.1f}" '
                          f'height="{size * 0.45:.1f}" rx="{size * 0.2:.1f}" fill="{colour}" '
                          f'transform="rotate({rng.uniform(-60, 60):.0f} {x:.1f} {y:.1f})"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><defs><linearGradient id="g" x1="0" y1="0" '
            f'x2="1" y2="1"><stop offset="0" stop-color="{colours[0]}"/><stop offset="1" '
            f'stop-color="{colours[-1]}" stop-opacity="0.35"/></linearGradient></defs>'
            f'<rect width="{width}" height="{height}" fill="url(#g)"/>'
            + "".join(shapes) + "</svg>").encode()


Scene = Callable[[Canvas, random.Random], None]
SCENES: tuple[Scene, ...] = (landscape, planet)
