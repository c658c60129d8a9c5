"""Synthetic card images and photos of them, so tests exercise the real pipeline on a clone.

Every card shares ONE frame (border texture, name bar, mana symbols, type line, text box, set
symbol) -- the very thing that makes real cards hard to tell apart -- and differs only by its
name text, its rules text and its art (random shapes, blobs and strokes seeded per card).
`photograph` puts a card into a scene: perspective, rotation (also upside down), scale, blur,
glare, sensor noise and JPEG compression, and returns where the card's corners went; `table`
lays several cards on one table. `make_reprint` makes other printings of a card's art.
"""

from __future__ import annotations

import string

import cv2
import numpy as np
import numpy.typing as npt

CARD_W, CARD_H = 488, 680
ART_BOX = (0.08, 0.11, 0.92, 0.56)  # same convention as FeatureParams.art_box


def _frame() -> np.ndarray:
    """The frame every synthetic card shares (fixed seed)."""
    rng = np.random.default_rng(12345)
    card = np.zeros((CARD_H, CARD_W, 3), np.uint8)
    texture = rng.integers(40, 110, (CARD_H // 8, CARD_W // 8, 3), dtype=np.uint8)
    card[:] = cv2.resize(texture, (CARD_W, CARD_H), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(card, (0, 0), (CARD_W - 1, CARD_H - 1), (15, 15, 15), 14)
    name_bar = (int(0.05 * CARD_W), int(0.04 * CARD_H), int(0.95 * CARD_W), int(0.10 * CARD_H))
    type_bar = (int(0.05 * CARD_W), int(0.57 * CARD_H), int(0.95 * CARD_W), int(0.63 * CARD_H))
    text_box = (int(0.07 * CARD_W), int(0.64 * CARD_H), int(0.93 * CARD_W), int(0.92 * CARD_H))
    for x0, y0, x1, y1 in (name_bar, type_bar):
        cv2.rectangle(card, (x0, y0), (x1, y1), (200, 210, 215), -1)
        cv2.rectangle(card, (x0, y0), (x1, y1), (30, 30, 30), 2)
    cv2.rectangle(card, text_box[:2], text_box[2:], (225, 230, 232), -1)
    for i in range(3):  # mana symbols
        centre = (int(0.90 * CARD_W) - 26 * i, int(0.07 * CARD_H))
        cv2.circle(card, centre, 10, (60, 60, 60), -1)
        cv2.circle(card, centre, 5, (230, 230, 230), -1)
    set_symbol = np.array([[0.88, 0.58], [0.91, 0.62], [0.85, 0.62]]) * [CARD_W, CARD_H]
    cv2.fillPoly(card, [set_symbol.astype(np.int32)], (20, 20, 20))
    cv2.putText(card, "123/249 C  SYN - EN", (int(0.06 * CARD_W), int(0.96 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return card


_FRAME = _frame()


def _words(rng: np.random.Generator, n: int) -> str:
    letters = np.array(list(string.ascii_letters))
    return " ".join("".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(n))


def _art(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Textured random art: a colour gradient, blobs of noise, polygons, circles, strokes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 80 * np.sin(a * xx / 40 + b * yy / 50 + d * 6)
    noise = rng.normal(0, 1, (height // 6 + 1, width // 6 + 1, 3)).astype(np.float32)
    base += 35 * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    art = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(14):
        pts = rng.integers(0, [width, height], (int(rng.integers(3, 7)), 2)).astype(np.int32)
        cv2.fillPoly(art, [pts], tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(18):
        centre = tuple(int(v) for v in rng.integers(0, [width, height]))
        radius = int(rng.integers(4, 30))
        cv2.circle(art, centre, radius, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    for _ in range(25):
        p0 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(art, p0, p1, color, int(rng.integers(1, 4)), cv2.LINE_AA)
    return art


def make_card(seed: int, frame: np.ndarray | None = None) -> np.ndarray:
    """A 488x680 BGR card: the shared frame (or `frame`) plus this seed's name, text, art."""
    rng = np.random.default_rng(seed)
    card = (_FRAME if frame is None else frame).copy()
    x0, y0, x1, y1 = (int(v * s) for v, s in zip(ART_BOX, (CARD_W, CARD_H, CARD_W, CARD_H),
                                                  strict=True))
    card[y0:y1, x0:x1] = _art(rng, x1 - x0, y1 - y0)
    cv2.putText(card, _words(rng, 2).title(), (int(0.07 * CARD_W), int(0.085 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (10, 10, 10), 1, cv2.LINE_AA)
    cv2.putText(card, _words(rng, 3), (int(0.07 * CARD_W), int(0.61 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (10, 10, 10), 1, cv2.LINE_AA)
    for line in range(6):
        cv2.putText(card, _words(rng, 4), (int(0.09 * CARD_W), int((0.69 + 0.04 * line) * CARD_H)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return card


def _other_frame() -> np.ndarray:
    """Another frame, as a reprint in a later set has: white border, other colours, the
    name bar and text box laid out differently."""
    card = _frame()
    cv2.rectangle(card, (0, 0), (CARD_W - 1, CARD_H - 1), (235, 235, 235), 22)
    cv2.rectangle(card, (int(0.05 * CARD_W), int(0.03 * CARD_H)),
                  (int(0.95 * CARD_W), int(0.10 * CARD_H)), (120, 60, 40), -1)
    cv2.rectangle(card, (int(0.07 * CARD_W), int(0.64 * CARD_H)),
                  (int(0.93 * CARD_W), int(0.92 * CARD_H)), (170, 200, 225), -1)
    return card


def make_reprint(seed: int, kind: str) -> np.ndarray:
    """Another printing of card `seed`'s art. "frame": the same art and text in another
    frame. "footer": the same card but for the set symbol and the collector line (what a
    reprint in another set looks like; a photo can hardly tell the two apart)."""
    if kind == "frame":
        return make_card(seed, _other_frame())
    if kind != "footer":
        raise ValueError(f"unknown reprint kind {kind!r}")
    card = make_card(seed)
    x0, y0 = int(0.84 * CARD_W), int(0.575 * CARD_H)
    card[y0 : int(0.625 * CARD_H), x0 : int(0.925 * CARD_W)] = (200, 210, 215)
    cv2.circle(card, (int(0.88 * CARD_W), int(0.60 * CARD_H)), 9, (20, 20, 140), -1)
    card[int(0.935 * CARD_H) : int(0.975 * CARD_H), int(0.05 * CARD_W) : int(0.6 * CARD_W)] = (
        card[int(0.94 * CARD_H), int(0.03 * CARD_W)]
    )
    cv2.putText(card, "087/301 U  RPT - EN", (int(0.06 * CARD_W), int(0.96 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return card


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wood-ish table: low-frequency stripes plus grain."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = np.sin(xx / 23.0 + 3 * np.sin(yy / 90.0)) * 25
    grain = cv2.GaussianBlur(rng.normal(0, 18, (height, width)).astype(np.float32), (0, 0), 1.5)
    tone: npt.NDArray[np.float32] = 150 + stripes + grain
    bg = np.stack([tone * 0.55, tone * 0.75, tone], axis=-1)
    return np.clip(bg, 0, 255).astype(np.uint8)


def photograph(
    card: np.ndarray,
    *,
    seed: int = 0,
    size: tuple[int, int] = (960, 720),
    card_height: float = 0.7,
    rotation: float = 0.0,
    tilt: float = 0.08,
    blur: float = 0.0,
    glare: float = 0.0,
    glare_band: float = 0.0,
    noise: float = 3.0,
    jpeg_quality: int = 88,
) -> tuple[np.ndarray, np.ndarray]:
    """(photo BGR, card corners in the photo, 4x2 float32: TL, TR, BR, BL of the card).

    `card_height` is the card's height as a fraction of the photo height, `rotation` degrees
    (180 = upside down), `tilt` the perspective jitter of each corner (fraction of card size),
    `glare` the strength (0-1) of a bright specular blob, `glare_band` that of a bright band
    across the card's art (a lamp's reflection on a glossy card, `glare_band` of white light
    at its middle).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    photo = _background(rng, width, height)
    h, w = card.shape[:2]
    scale = card_height * height / h
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.05, 0.05, 2) * [width, height]
    local = (np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - [w / 2, h / 2]) * scale
    local += rng.uniform(-tilt, tilt, (4, 2)) * [w * scale, h * scale]
    theta = np.deg2rad(rotation)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    corners = (local @ rot.T + centre).astype(np.float32)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners)
    warped = cv2.warpPerspective(card, matrix, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size)
    photo[mask > 127] = warped[mask > 127]
    if glare > 0:
        gx, gy = corners.mean(axis=0) + rng.uniform(-0.15, 0.15, 2) * h * scale
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        sigma = 0.12 * h * scale
        blob = glare * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * sigma**2))
        photo = (photo * (1 - blob[..., None]) + 255 * blob[..., None]).astype(np.uint8)
    if glare_band > 0:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        art_middle = cv2.perspectiveTransform(np.array([[[w / 2, 0.33 * h]]], np.float32),
                                              matrix)[0, 0]
        offset = (xx - art_middle[0]) * np.cos(angle) + (yy - art_middle[1]) * np.sin(angle)
        sigma = 0.06 * h * scale
        band = glare_band * np.exp(-(offset**2) / (2 * sigma**2))
        photo = (photo * (1 - band[..., None]) + 255 * band[..., None]).astype(np.uint8)
    if blur > 0:
        photo = cv2.GaussianBlur(photo, (0, 0), blur)
    if noise > 0:
        photo = np.clip(photo + rng.normal(0, noise, photo.shape), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert decoded is not None
    return np.asarray(decoded, dtype=np.uint8), corners


def table(
    cards: list[tuple[np.ndarray, float, float, float, float]],
    *,
    seed: int = 0,
    size: tuple[int, int] = (2400, 1800),
    jpeg_quality: int = 90,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Several cards on one table: each is (card image, centre x, centre y as fractions of
    the photo, card height as a fraction of the photo height, rotation in degrees), laid in
    order (a later card covers an earlier one where they overlap). Returns the photo and each
    card's corners (TL, TR, BR, BL) in it."""
    rng = np.random.default_rng(seed)
    width, height = size
    photo = _background(rng, width, height)
    placed = []
    for card, cx, cy, card_height, rotation in cards:
        h, w = card.shape[:2]
        scale = card_height * height / h
        local = (np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - [w / 2, h / 2]) * scale
        local += rng.uniform(-0.04, 0.04, (4, 2)) * [w * scale, h * scale]
        theta = np.deg2rad(rotation)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        corners = (local @ rot.T + [cx * width, cy * height]).astype(np.float32)
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        matrix = cv2.getPerspectiveTransform(src, corners)
        warped = cv2.warpPerspective(card, matrix, size, flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size)
        photo[mask > 127] = warped[mask > 127]
        placed.append(corners)
    photo = np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert decoded is not None
    return np.asarray(decoded, dtype=np.uint8), placed


def draw_collector_line(
    card: np.ndarray, number: str, set_code: str, *, lang: str = "EN", foil: bool = False
) -> np.ndarray:
    """`card` with a collector line in today's frame layout at its bottom left, light on a
    dark band: `C 0087` over `SYN • EN` (a ★ instead of the • for a foil)."""
    out = card.copy()
    x0, y0 = int(0.03 * CARD_W), int(0.925 * CARD_H)
    out[y0 : int(0.99 * CARD_H), x0 : int(0.55 * CARD_W)] = (25, 22, 20)
    ink = (235, 235, 235)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    left = int(0.05 * CARD_W)
    first, second = int(0.951 * CARD_H), int(0.978 * CARD_H)
    cv2.putText(out, f"C {number:0>4}", (left, first), font, scale, ink, 1, cv2.LINE_AA)
    cv2.putText(out, set_code.upper(), (left, second), font, scale, ink, 1, cv2.LINE_AA)
    (width, height), _ = cv2.getTextSize(set_code.upper(), font, scale, 1)
    cx, cy = left + width + 8, second - height // 2
    if foil:
        points = [
            (cx + (4.5 if i % 2 == 0 else 1.9) * np.cos(-np.pi / 2 + i * np.pi / 5),
             cy + (4.5 if i % 2 == 0 else 1.9) * np.sin(-np.pi / 2 + i * np.pi / 5))
            for i in range(10)
        ]
        cv2.fillPoly(out, [np.array(points, np.int32)], ink, cv2.LINE_AA)
    else:
        # a disc under half the letters' height, as printed (radius 1.25 px: shift=2)
        cv2.circle(out, (cx * 4, cy * 4), 5, ink, -1, cv2.LINE_AA, shift=2)
    cv2.putText(out, lang.upper(), (cx + 8, second), font, scale, ink, 1, cv2.LINE_AA)
    return out


# -- layouts of their own: Rooms, split cards, sagas ------------------------------------------
# What every card of such a layout shares fills most of the fixed art box: a Room's two
# sideways halves (name bar, a narrow art strip, reminder text, type line, text box), a split
# card's halves, a saga's chapter text beside a tall art strip. Cards of one layout differ in
# their art, their name and their frame's colour.
Box = tuple[float, float, float, float]


def _two_halves(half: list[tuple[str, Box]]) -> list[tuple[str, Box]]:
    """A layout of two sideways halves (a Room, a split card): `half`'s parts, once in the
    top half of the card and once in the bottom one."""
    return [(kind, (x0, y0 + dy, x1, y1 + dy)) for dy in (0.0, 0.47)
            for kind, (x0, y0, x1, y1) in half]


LAYOUTS: dict[str, list[tuple[str, Box]]] = {
    # (kind, box as fractions of the card: x0, y0, x1, y1); "art" and "name" are the card's
    # own, "text" is shared pseudo-text, "bar" a shared bar
    "room": _two_halves([
        ("name", (0.04, 0.04, 0.13, 0.49)), ("art", (0.15, 0.04, 0.40, 0.49)),
        ("text", (0.42, 0.04, 0.53, 0.49)), ("bar", (0.55, 0.04, 0.62, 0.49)),
        ("text", (0.64, 0.04, 0.96, 0.49)),
    ]),
    "split": _two_halves([
        ("name", (0.04, 0.04, 0.12, 0.49)), ("art", (0.14, 0.04, 0.46, 0.49)),
        ("bar", (0.48, 0.04, 0.55, 0.49)), ("text", (0.57, 0.04, 0.96, 0.49)),
    ]),
    "saga": [
        ("name", (0.05, 0.03, 0.95, 0.09)), ("text", (0.05, 0.11, 0.52, 0.86)),
        ("art", (0.55, 0.11, 0.95, 0.86)), ("bar", (0.05, 0.87, 0.95, 0.93)),
    ],
}


def _pseudo_text(rng: np.random.Generator, width: int, height: int, vertical: bool) -> np.ndarray:
    """Dark lines of random words on a light box (rotated for a sideways half)."""
    w, h = (height, width) if vertical else (width, height)
    box = np.full((h, w, 3), (222, 228, 232), np.uint8)
    for line in range(max(1, (h - 8) // 18)):
        cv2.putText(box, _words(rng, 5), (6, 16 + 18 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (20, 20, 20), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.rot90(box)) if vertical else box


def _layout_frame(layout: str) -> np.ndarray:
    """The part of a layout every card of it shares (fixed seed per layout)."""
    rng = np.random.default_rng(sum(map(ord, layout)))
    card = _frame()
    vertical = layout != "saga"
    for kind, (x0, y0, x1, y1) in LAYOUTS[layout]:
        a, b, c, d = int(x0 * CARD_W), int(y0 * CARD_H), int(x1 * CARD_W), int(y1 * CARD_H)
        if kind == "text":
            card[b:d, a:c] = _pseudo_text(rng, c - a, d - b, vertical)
        elif kind == "bar":
            card[b:d, a:c] = (200, 210, 215)
            cv2.rectangle(card, (a, b), (c - 1, d - 1), (30, 30, 30), 2)
            text = _pseudo_text(rng, c - a - 6, d - b - 6, vertical)
            card[b + 3 : d - 3, a + 3 : c - 3] = text
    return card


def make_layout_card(seed: int, layout: str) -> np.ndarray:
    """A 488x680 BGR card of `layout` ("room", "split", "saga"): the layout's shared frame,
    tinted in this seed's colour (a red Room, a blue Room), with this seed's art and name
    where the layout puts them."""
    rng = np.random.default_rng(seed)
    card = _layout_frame(layout).astype(np.float32)
    tint = np.array([(0.35, 0.35, 1.3), (1.3, 0.6, 0.35), (0.4, 1.2, 0.5), (1.1, 1.1, 1.1),
                     (0.8, 0.4, 1.1)][seed % 5], np.float32)
    border = np.ones(card.shape[:2], bool)
    vertical = layout != "saga"
    for _kind, (x0, y0, x1, y1) in LAYOUTS[layout]:
        a, b, c, d = int(x0 * CARD_W), int(y0 * CARD_H), int(x1 * CARD_W), int(y1 * CARD_H)
        border[b:d, a:c] = False
    card[border] *= tint  # the frame's colour
    out = np.clip(card, 0, 255).astype(np.uint8)
    for kind, (x0, y0, x1, y1) in LAYOUTS[layout]:
        a, b, c, d = int(x0 * CARD_W), int(y0 * CARD_H), int(x1 * CARD_W), int(y1 * CARD_H)
        if kind == "art":
            out[b:d, a:c] = _art(rng, c - a, d - b)
        elif kind == "name":
            w, h = (d - b, c - a) if vertical else (c - a, d - b)
            bar = np.full((h, w, 3), (200, 210, 215), np.uint8)
            cv2.putText(bar, _words(rng, 2).title(), (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6, (10, 10, 10), 1, cv2.LINE_AA)
            out[b:d, a:c] = np.ascontiguousarray(np.rot90(bar)) if vertical else bar
    return out


def _smooth_art(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Dark, smooth art (a night sky, a dim room): a soft gradient and a few blurred shapes,
    no edges or fine texture. SIFT finds keypoints in it, of lower contrast than the text's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    art = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        art[..., c] = 40 + 18 * np.sin(a * xx / 60 + b * yy / 70 + rng.uniform(0, 6))
    for _ in range(22):
        centre = tuple(int(v) for v in rng.integers(0, [width, height]))
        axes = tuple(int(v) for v in rng.integers(6, 28, 2))
        colour = tuple(float(v) for v in rng.uniform(15, 110, 3))
        cv2.ellipse(art, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    smooth = cv2.GaussianBlur(art, (0, 0), 2.5)
    return np.clip(smooth, 0, 255).astype(np.uint8)


SHARED_TEXT_SEED = 777  # rules text every smooth-art card shares (its stop words)


def make_smooth_card(seed: int) -> np.ndarray:
    """A card whose only own features are in dark, smooth art: its name is short and its
    rules text is the same as other such cards' (a reminder-text card, an enchantment
    cycle), so the busy text box, which outshines the art, tells it from no other card."""
    rng = np.random.default_rng(seed)
    card = _FRAME.copy()
    x0, y0, x1, y1 = (int(v * s) for v, s in zip(ART_BOX, (CARD_W, CARD_H, CARD_W, CARD_H),
                                                  strict=True))
    card[y0:y1, x0:x1] = _smooth_art(rng, x1 - x0, y1 - y0)
    cv2.putText(card, _words(rng, 1).title(), (int(0.07 * CARD_W), int(0.085 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (10, 10, 10), 1, cv2.LINE_AA)
    shared = np.random.default_rng(SHARED_TEXT_SEED)
    cv2.putText(card, _words(shared, 3), (int(0.07 * CARD_W), int(0.61 * CARD_H)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (10, 10, 10), 1, cv2.LINE_AA)
    for line in range(6):
        cv2.putText(card, _words(shared, 4), (int(0.09 * CARD_W),
                                              int((0.69 + 0.04 * line) * CARD_H)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return card


def recolored(card: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """The card with its colours turned to their opposites around each pixel's grey level
    (a red frame turns cyan, orange art blue), its grey image (what SIFT and the grey art
    check see) nearly unchanged: c' = y + strength * (y - c) per channel, y the pixel's
    luma, which the three channels' weights keep (clipping aside, hence `strength` < 1)."""
    image = card.astype(np.float32)
    luma = image @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights of cv2's gray
    out = luma[..., None] + strength * (luma[..., None] - image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def tinted(photo: np.ndarray, gains: tuple[float, float, float] = (0.75, 1.0, 1.25)) -> np.ndarray:
    """A photo under a colour cast (BGR gains; the default: warm light, blue dimmed)."""
    return np.clip(photo.astype(np.float32) * np.array(gains, np.float32), 0, 255).astype(
        np.uint8)
