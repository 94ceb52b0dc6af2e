"""Draw the book's diagrams as SVG files, reproducibly.

    python book/figures/make_diagrams.py               # (re)writes book/figures/*.svg
    python book/figures/make_diagrams.py --out DIR     # writes them into DIR instead
    python book/figures/make_diagrams.py --png DIR     # also writes PNG previews into DIR

Every figure is built from matplotlib patches, arrows and text, nothing else. The SVGs keep
their text as text, carry no date and no version, and use a fixed hash salt, so running the
script again gives byte-identical files: tests/test_diagrams.py checks that the committed
figures are exactly what this script draws (a new matplotlib release may change the bytes:
`make diagrams` then redraws them, and the diff shows what moved). Before a figure is saved its
layout is checked: every label lies inside its box, no two boxes or labels overlap, no arrow
crosses a label or a box, and nothing runs off the edge; `--draft` reports such problems and
saves anyway, for work in progress.

Colours mean the same thing in every figure (see PALETTE): blue for tensors, orange for
learned layers, green for LayerNorm, purple for attention, red for the loss and the output,
grey for plain operations and control flow. Names are GPT-2's (wte, wpe, ln_f, lm_head,
c_attn, c_proj), as in gptlib.
"""

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import (
    Circle,
    FancyArrowPatch,
    FancyBboxPatch,
    Polygon,
    Rectangle,
)  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDTH = 720  # px at DPI: every figure is about 700 px wide
DPI = 100
INK = "#2b2b2b"  # text and arrows
MUTED = "#5c5c5c"  # shapes and side notes
STYLE = {
    "svg.hashsalt": "gptlib-diagrams",  # ids of clip paths etc. no longer random
    "svg.fonttype": "none",  # text stays text: small files, no glyph outlines that vary by version
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "mathtext.fontset": "dejavusans",
    "axes.unicode_minus": True,
}
# kind -> (fill, edge)
PALETTE = {
    "tensor": ("#e3effb", "#2f6db5"),
    "param": ("#fdeedd", "#c0640f"),
    "norm": ("#e2f4e6", "#2e8549"),
    "attn": ("#eee8fa", "#6942b0"),
    "loss": ("#fbe5e5", "#b3312f"),
    "op": ("#f1f1f1", "#6b6b6b"),
}
HEADS = [
    "#7fa9dc",
    "#f0a45c",
    "#79c28f",
    "#b197e0",
]  # one colour per head in the multi-head figure
PX_PER_PT = DPI / 72


@dataclass
class Box:
    """A box's centre (x, y) and size in px; y grows downwards."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x0(self):
        return self.x - self.w / 2

    @property
    def x1(self):
        return self.x + self.w / 2

    @property
    def y0(self):
        return self.y - self.h / 2

    @property
    def y1(self):
        return self.y + self.h / 2

    def top(self, dx=0.0):
        return (self.x + dx, self.y0)

    def bottom(self, dx=0.0):
        return (self.x + dx, self.y1)

    def left(self, dy=0.0):
        return (self.x0, self.y + dy)

    def right(self, dy=0.0):
        return (self.x1, self.y + dy)


class Diagram:
    """One figure: a canvas WIDTH x height px with y growing downwards, and its layout checks."""

    def __init__(self, name: str, title: str, height: float, width: float = WIDTH):
        self.name, self.title = name, title
        self.fig = Figure(
            figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white"
        )
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_axis_off()
        self.boxed = []  # (patch, texts that must lie inside it)
        self.solids = []  # patches that must not overlap each other
        self.texts = []  # every text: none may overlap another
        self.lines = []  # arrows and curves (lists of points): they may cross no text and no box

    # ---- drawing -------------------------------------------------------------------------
    def text(self, x, y, s, size=9.0, color=MUTED, ha="center", va="center", **kw):
        t = self.ax.text(
            x, y, s, fontsize=size, color=color, ha=ha, va=va, zorder=5, **kw
        )
        self.texts.append(t)
        return t

    def box(
        self,
        x,
        y,
        w,
        h,
        title,
        sub=None,
        kind="op",
        size=10.0,
        bold=False,
        sub_size=None,
    ) -> Box:
        """A rounded box with a title and an optional smaller second part (shapes, detail)."""
        face, edge = PALETTE[kind]
        patch = FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=7",
            fc=face, ec=edge, lw=1.4, zorder=2,
        )  # fmt: skip
        self.ax.add_patch(patch)
        sub_size = sub_size or size - 1.5
        weight = "bold" if bold else "normal"
        if sub is None:
            texts = [self.text(x, y, title, size=size, color=INK, weight=weight)]
        else:
            l1 = size * PX_PER_PT * 1.2 * (title.count("\n") + 1)
            l2 = sub_size * PX_PER_PT * 1.2 * (sub.count("\n") + 1)
            total = l1 + l2 + 2
            texts = [
                self.text(
                    x,
                    y - total / 2 + l1 / 2,
                    title,
                    size=size,
                    color=INK,
                    weight=weight,
                ),
                self.text(x, y + total / 2 - l2 / 2, sub, size=sub_size, color=MUTED),
            ]
        self.boxed.append((patch, texts))
        self.solids.append(patch)
        return Box(x, y, w, h)

    def diamond(self, x, y, w, h, title, kind="op", size=9.5) -> Box:
        face, edge = PALETTE[kind]
        patch = Polygon(
            [(x, y - h / 2), (x + w / 2, y), (x, y + h / 2), (x - w / 2, y)], closed=True,
            fc=face, ec=edge, lw=1.4, zorder=2,
        )  # fmt: skip
        self.ax.add_patch(patch)
        t = self.text(x, y, title, size=size, color=INK)
        # the text must fit the inner rectangle of the diamond
        inner = Rectangle((x - w / 4, y - h / 4), w / 2, h / 2, visible=False)
        self.ax.add_patch(inner)
        self.boxed.append((inner, [t]))
        self.solids.append(patch)
        return Box(x, y, w, h)

    def plus(self, x, y, r=11) -> Box:
        """The residual sum: a circle with a plus drawn as two lines."""
        c = Circle((x, y), r, fc="white", ec=INK, lw=1.4, zorder=3)
        self.ax.add_patch(c)
        self.solids.append(c)
        k = r * 0.55
        self.ax.plot(
            [x - k, x + k], [y, y], color=INK, lw=1.6, zorder=4, solid_capstyle="butt"
        )
        self.ax.plot(
            [x, x], [y - k, y + k], color=INK, lw=1.6, zorder=4, solid_capstyle="butt"
        )
        return Box(x, y, 2 * r, 2 * r)

    def frame(
        self,
        x0,
        y0,
        x1,
        y1,
        label=None,
        label_xy=None,
        color=MUTED,
        ha="left",
        size=9.0,
    ):
        """A dashed group outline (not a solid: boxes sit inside it)."""
        patch = FancyBboxPatch(
            (x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=10",
            fc="none", ec=color, lw=1.1, ls=(0, (4, 3)), zorder=1,
        )  # fmt: skip
        self.ax.add_patch(patch)
        if label:
            lx, ly = label_xy or (x0 + 10, y0 + 12)
            self.text(lx, ly, label, size=size, color=color, ha=ha, style="italic")

    def solid(self, x0, y0, x1, y1):
        """Mark a drawn region (a grid, a sketch) that no label, box or arrow may enter."""
        r = Rectangle((x0, y0), x1 - x0, y1 - y0, visible=False)
        self.ax.add_patch(r)
        self.solids.append(r)

    def cells(
        self,
        x0,
        y0,
        n,
        size,
        fill,
        edge=MUTED,
        labels=None,
        label_size=8.0,
        highlight=None,
    ) -> Box:
        """A row of n square cells (a cache, a sequence of tokens), the last one in `highlight`."""
        for i in range(n):
            fc = highlight if highlight is not None and i == n - 1 else fill
            r = Rectangle(
                (x0 + i * size, y0), size, size, fc=fc, ec=edge, lw=1.0, zorder=2
            )
            self.ax.add_patch(r)
            if labels:
                self.boxed.append(
                    (
                        r,
                        [
                            self.text(
                                x0 + (i + 0.5) * size,
                                y0 + size / 2,
                                labels[i],
                                size=label_size,
                                color=INK,
                            )
                        ],
                    )
                )
        self.solid(x0, y0, x0 + n * size, y0 + size)
        return Box(x0 + n * size / 2, y0 + size / 2, n * size, size)

    def arrow(self, *points, color=INK, lw=1.3, ls="-", head=True):
        """A straight or elbowed arrow through the given points; the head at the last one."""
        codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1)
        style = "-|>,head_length=0.55,head_width=0.28" if head else "-"
        a = FancyArrowPatch(
            path=MplPath(points, codes), arrowstyle=style, mutation_scale=14, color=color,
            lw=lw, ls=ls, zorder=3, joinstyle="miter", capstyle="butt",
        )  # fmt: skip
        self.ax.add_patch(a)
        self.lines.append(list(points))
        return a

    def polyline(self, xs, ys, color, lw=1.6, **kw):
        self.ax.plot(xs, ys, color=color, lw=lw, zorder=3, **kw)
        self.lines.append(list(zip(xs, ys, strict=True)))

    # ---- checking and saving -------------------------------------------------------------
    def check(self):
        """The layout problems: a label outside its box, two boxes or labels that overlap, anything cut off."""
        self.fig.canvas.draw()
        r = self.fig.canvas.get_renderer()
        fig_box = self.fig.bbox
        problems = []

        def ext(artist):
            return artist.get_window_extent(r)

        def name(t):
            return repr(t.get_text().replace("\n", " / "))

        for patch, texts in self.boxed:
            pb = ext(patch)
            for t in texts:
                tb = ext(t)
                if not (
                    tb.x0 >= pb.x0 + 3
                    and tb.x1 <= pb.x1 - 3
                    and tb.y0 >= pb.y0 + 2
                    and tb.y1 <= pb.y1 - 2
                ):
                    problems.append(f"text {name(t)} does not fit its box")
        boxes = [ext(p) for p in self.solids]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                if _overlap(a, b, -1):
                    problems.append(f"two boxes overlap: {a.bounds} and {b.bounds}")
        tbs = [(t, ext(t)) for t in self.texts if t.get_text().strip()]
        for i, (t, a) in enumerate(tbs):
            if not (
                a.x0 >= fig_box.x0 + 2
                and a.x1 <= fig_box.x1 - 2
                and a.y0 >= fig_box.y0 + 2
                and a.y1 <= fig_box.y1 - 2
            ):
                problems.append(f"text {name(t)} is cut off at the edge")
            for u, b in tbs[i + 1 :]:
                if _overlap(a, b, 0):
                    problems.append(f"texts {name(t)} and {name(u)} overlap")
        inside = {id(t) for _, ts in self.boxed for t in ts}
        for t, a in tbs:
            if id(t) in inside:
                continue
            for b in boxes:
                if _overlap(a, b, 0):
                    problems.append(f"free text {name(t)} overlaps a box at {b.bounds}")
        # arrows and curves: sample them every pixel; no sample may fall on a label or inside a box
        to_px = self.ax.transData.transform
        for line in self.lines:
            pts = to_px(line)
            samples = []
            for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                n = max(2, int(math.hypot(x1 - x0, y1 - y0)))
                samples += [
                    (x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n)
                    for k in range(n + 1)
                ]
            for t, a in tbs:
                if any(
                    a.x0 - 1 <= x <= a.x1 + 1 and a.y0 - 1 <= y <= a.y1 + 1
                    for x, y in samples
                ):
                    problems.append(f"a line crosses the text {name(t)}")
            for b in boxes:
                if any(
                    b.x0 + 2 < x < b.x1 - 2 and b.y0 + 2 < y < b.y1 - 2
                    for x, y in samples
                ):
                    problems.append(f"a line runs through a box at {b.bounds}")
        for b in boxes:
            if not (
                b.x0 >= fig_box.x0
                and b.x1 <= fig_box.x1
                and b.y0 >= fig_box.y0
                and b.y1 <= fig_box.y1
            ):
                problems.append(f"a box at {b.bounds} is cut off at the edge")
        return [f"{self.name}: {p}" for p in problems]

    def save(self, out: Path, png: Path | None = None, draft: bool = False) -> Path:
        problems = self.check()
        if problems and not draft:
            raise ValueError("\n".join(problems))
        for p in problems:
            print(p, file=sys.stderr)
        path = out / f"{self.name}.svg"
        self.fig.savefig(
            path,
            format="svg",
            metadata={"Date": None, "Creator": None, "Title": self.title},
        )
        if png is not None:
            self.fig.savefig(png / f"{self.name}.png", format="png", dpi=DPI)
        return path


def _overlap(a: Bbox, b: Bbox, pad: float) -> bool:
    """True if the two boxes overlap by more than -pad px (pad > 0 also catches near misses)."""
    return (
        a.x0 < b.x1 + pad
        and b.x0 < a.x1 + pad
        and a.y0 < b.y1 + pad
        and b.y0 < a.y1 + pad
    )


# ---- the figures ---------------------------------------------------------------------------


def bpe_merge_loop() -> Diagram:
    d = Diagram("bpe_merge_loop", "The BPE training loop", 480)
    cx, w = 225, 300
    start = d.box(
        cx,
        40,
        w,
        52,
        "text → UTF-8 bytes",
        "ids 0 … 255: the first 256 tokens",
        kind="tensor",
    )
    count = d.box(
        cx,
        124,
        w,
        52,
        "count every adjacent pair of ids",
        "over all the training text",
        kind="op",
    )
    pick = d.box(
        cx,
        208,
        w,
        52,
        "pick the most frequent pair (a, b)",
        "ties broken by a fixed rule",
        kind="op",
    )
    merge = d.box(
        cx,
        292,
        w,
        52,
        "merge: each (a, b) → new id 256 + k",
        "record the merge; k ← k + 1",
        kind="param",
    )
    done = d.diamond(cx, 392, 230, 92, "vocab_size\nreached?")
    result = d.box(
        580, 392, 220, 52, "merges + vocab", "id → bytes, in merge order", kind="loss"
    )
    d.arrow(start.bottom(), count.top())
    d.arrow(count.bottom(), pick.top())
    d.arrow(pick.bottom(), merge.top())
    d.arrow(merge.bottom(), done.top())
    d.arrow(done.right(), result.left())
    d.text((done.x1 + result.x0) / 2, done.y - 11, "yes", size=9, color=INK)
    loop_x = 40
    d.arrow(done.left(), (loop_x, done.y), (loop_x, count.y), count.left())
    d.text((loop_x + done.x0) / 2, done.y - 11, "no", size=9, color=INK)
    d.text(loop_x + 8, (pick.y + merge.y) / 2, "repeat", size=9, color=INK, ha="left")
    # one round worked by hand, on the right
    px0, px1, py0, py1 = 410, 710, 98, 318
    d.frame(
        px0, py0, px1, py1, "one round, on the text “lowlower”", (px0 + 12, py0 + 16)
    )
    mono = {"family": "DejaVu Sans Mono", "size": 9, "color": INK, "ha": "left"}
    rows = [
        ("ids", "l o w l o w e r"),
        ("pairs", "(l,o)×2, (o,w)×2,\n(w,l)×1, (w,e)×1, (e,r)×1"),
        ("merge", "(l,o) → 256"),
        ("ids", "256 w 256 w e r"),
        ("next", "(256,w)×2 → 257"),
    ]
    y = py0 + 44
    for label, value in rows:
        d.text(px0 + 14, y, label, size=9, color=MUTED, ha="left", va="top")
        d.text(px0 + 70, y, value, va="top", **mono)
        y += 30 + 14 * value.count("\n")
    return d


def attention_dataflow() -> Diagram:
    d = Diagram("attention_dataflow", "Causal self-attention, one head", 580)
    x = d.box(300, 34, 170, 46, "x", "(B, T, C)", kind="tensor", bold=True)
    lin = {}
    for key, cx in (("Q", 120), ("K", 300), ("V", 560)):
        lin[key] = d.box(
            cx, 126, 160, 50, f"{key} = x W_{key.lower()}", "(B, T, d)", kind="param"
        )
    bus = 78
    d.arrow(x.bottom(), (x.x, bus), (lin["Q"].x, bus), lin["Q"].top())
    d.arrow((x.x, bus), lin["K"].top())
    d.arrow((x.x, bus), (lin["V"].x, bus), lin["V"].top())
    col, bw = 210, 250
    scores = d.box(
        col,
        226,
        bw,
        52,
        "scores S = Q Kᵀ / √d",
        "(B, T, T): query i · key j",
        kind="attn",
    )
    d.arrow(lin["Q"].bottom(), (lin["Q"].x, 178), (scores.x - 50, 178), scores.top(-50))
    d.arrow(lin["K"].bottom(), (lin["K"].x, 178), (scores.x + 50, 178), scores.top(50))
    mask = d.box(
        col, 318, bw, 52, "S + mask", "−∞ where j > i: no looking ahead", kind="attn"
    )
    soft = d.box(
        col,
        410,
        bw,
        52,
        "A = softmax(S, dim=−1)",
        "(B, T, T): each row sums to 1",
        kind="attn",
    )
    out = d.box(
        col,
        510,
        bw,
        52,
        "out = A V",
        "(B, T, d): a weighted sum of values",
        kind="tensor",
    )
    d.arrow(scores.bottom(), mask.top())
    d.arrow(mask.bottom(), soft.top())
    d.arrow(soft.bottom(), out.top())
    d.arrow(lin["V"].bottom(), (lin["V"].x, out.y), out.right())
    # a small causal mask, T = 6: query i (row) may look at keys j <= i
    n, s = 6, 13
    gx0, gy0 = 392, 280
    for i in range(n):
        for j in range(n):
            fc = "#a78bdb" if j <= i else "white"
            d.ax.add_patch(
                Rectangle(
                    (gx0 + j * s, gy0 + i * s),
                    s,
                    s,
                    fc=fc,
                    ec="#bdbdbd",
                    lw=0.6,
                    zorder=2,
                )
            )
    d.solid(gx0, gy0, gx0 + n * s, gy0 + n * s)
    d.text(gx0 + n * s / 2, gy0 - 10, "keys j →", size=8.5)
    d.text(gx0 - 6, gy0 + n * s / 2, "i", size=9, ha="right", style="italic")
    d.text(gx0 + n * s / 2, gy0 + n * s + 12, "mask, T = 6", size=8.5)
    d.text(
        300,
        562,
        "d: the head size; one head of size d = C here, H heads of d = C / H in the next figure",
        size=8.5,
    )
    return d


def multihead_split_merge() -> Diagram:
    d = Diagram(
        "multihead_split_merge",
        "Multi-head attention: split into heads and merge back",
        700,
    )
    cx, w, h = 200, 330, 52
    rows = [
        ("x", "(B, T, C)", "tensor"),
        ("c_attn: Linear(C, 3C), split in three", "q, k, v, each (B, T, C)", "param"),
        ("view(B, T, H, d)", "d = C / H channels for each head", "op"),
        ("transpose(1, 2)", "(B, H, T, d): heads become a batch dimension", "op"),
        (
            "attention in every head at once",
            "softmax(q kᵀ / √d + mask) v → (B, H, T, d)",
            "attn",
        ),
        ("transpose(1, 2).contiguous()", "(B, T, H, d)", "op"),
        ("view(B, T, C)", "the heads side by side again", "op"),
        ("c_proj: Linear(C, C)", "mixes what the heads found: (B, T, C)", "param"),
    ]
    ys = [34 + 86 * i for i in range(len(rows))]
    boxes = [
        d.box(cx, y, w, h if i else 44, title, sub, kind=kind, bold=(i == 0))
        for i, ((title, sub, kind), y) in enumerate(zip(rows, ys, strict=True))
    ]
    for a, b in zip(boxes, boxes[1:]):
        d.arrow(a.bottom(), b.top())
    # sketches of one batch element on the right: T rows, C channels as H coloured bands
    T, H, band, gap = 36, 4, 26, 10
    sx = 420

    def banded(y, label):
        for i, col in enumerate(HEADS):
            d.ax.add_patch(
                Rectangle(
                    (sx + i * band, y - T / 2),
                    band,
                    T,
                    fc=col,
                    ec="white",
                    lw=1.2,
                    zorder=2,
                )
            )
        d.ax.add_patch(
            Rectangle(
                (sx, y - T / 2), H * band, T, fc="none", ec=MUTED, lw=1.0, zorder=3
            )
        )
        d.solid(sx, y - T / 2, sx + H * band, y + T / 2)
        d.text(sx + H * band + 10, y, label, size=8.5, ha="left")

    def split(y, label, square=False):
        side = T if square else band
        for i, col in enumerate(HEADS):
            x0 = sx + i * (side + gap)
            d.ax.add_patch(
                Rectangle(
                    (x0, y - T / 2),
                    side,
                    T,
                    fc="white" if square else col,
                    ec=MUTED,
                    lw=1.0,
                    zorder=2,
                )
            )
            if square:  # the causal weights of each head: the lower triangle
                tri = [(x0, y - T / 2), (x0, y + T / 2), (x0 + side, y + T / 2)]
                d.ax.add_patch(Polygon(tri, closed=True, fc=col, ec="none", zorder=3))
            d.solid(x0, y - T / 2, x0 + side, y + T / 2)
            d.text(x0 + side / 2, y + T / 2 + 9, f"h{i}", size=8)
        d.text(sx + H * (side + gap) - gap + 10, y, label, size=8.5, ha="left")

    d.text(
        sx + 2,
        ys[1],
        "one batch element, H = 4:\ntime down, channels across",
        size=8.5,
        ha="left",
    )
    banded(ys[2], "T × C,\nC = H · d")
    split(ys[3] - 4, "H × (T × d)")
    split(ys[4] - 4, "H × (T × T)\nweights", square=True)
    banded(ys[6], "T × C")
    return d


def transformer_block() -> Diagram:
    d = Diagram("transformer_block", "A pre-norm transformer block, as in GPT-2", 620)
    sx = 150  # the residual stream
    bx = 345  # the branches
    x_in = d.box(sx, 32, 150, 44, "x", "(B, T, C)", kind="tensor", bold=True)
    fork1 = 104
    ln1 = d.box(bx, 150, 200, 44, "ln_1: LayerNorm", kind="norm")
    attn = d.box(
        bx,
        228,
        200,
        56,
        "attn",
        "causal self-attention\nc_attn → heads → c_proj",
        kind="attn",
        sub_size=8.5,
    )
    add1 = d.plus(sx, 294)
    fork2 = 326
    ln2 = d.box(bx, 366, 200, 44, "ln_2: LayerNorm", kind="norm")
    mlp = d.box(
        bx,
        456,
        200,
        80,
        "mlp",
        "c_fc: Linear(C, 4C)\nGELU\nc_proj: Linear(4C, C)",
        kind="param",
        sub_size=8.5,
    )
    add2 = d.plus(sx, 528)
    x_out = d.box(sx, 588, 150, 44, "x", "(B, T, C)", kind="tensor", bold=True)
    d.arrow(x_in.bottom(), add1.top())
    d.arrow((sx, fork1), (bx, fork1), ln1.top())
    d.arrow(ln1.bottom(), attn.top())
    d.arrow(attn.bottom(), (bx, add1.y), add1.right())
    d.arrow(add1.bottom(), add2.top())
    d.arrow((sx, fork2), (bx, fork2), ln2.top())
    d.arrow(ln2.bottom(), mlp.top())
    d.arrow(mlp.bottom(), (bx, add2.y), add2.right())
    d.arrow(add2.bottom(), x_out.top())
    for y in (fork1, fork2):
        d.ax.add_patch(Circle((sx, y), 3.2, fc=INK, ec=INK, zorder=4))
    d.text(sx - 14, (fork1 + add1.y) / 2, "residual\nstream", size=8.5, ha="right")
    d.text(sx - 14, (fork2 + add2.y) / 2, "residual\nstream", size=8.5, ha="right")
    d.frame(
        40, 64, 470, 556, "block h[i], repeated n_layer times", (460, 80), ha="right"
    )
    # the two lines of code, on the right
    mono = {"size": 9.5, "color": INK, "family": "DejaVu Sans Mono"}
    d.text(596, 196, "x = x + attn(ln_1(x))", **mono)
    d.text(
        596,
        236,
        "normalise the input of the\nbranch, then add: the stream\nitself is never normalised",
        size=8.5,
    )
    d.text(596, 428, "x = x + mlp(ln_2(x))", **mono)
    d.text(596, 462, "each position on its own:\nC → 4C → C", size=8.5)
    return d


def encoder_decoder() -> Diagram:
    d = Diagram("encoder_decoder", "The encoder-decoder transformer", 650)
    ex, dx, w = 180, 520, 230
    src = d.box(ex, 610, w, 44, "source tokens", "(B, S)", kind="tensor")
    tgt = d.box(dx, 610, w, 44, "target tokens, shifted right", "(B, T)", kind="tensor")
    emb_e = d.box(ex, 540, w, 46, "embedding + positions", "(B, S, C)", kind="param")
    emb_d = d.box(dx, 540, w, 46, "embedding + positions", "(B, T, C)", kind="param")
    # the data flows upwards, as in the paper's figure
    e_sa = d.box(
        ex, 440, w, 46, "self-attention", "every source token sees all", kind="attn"
    )
    e_n1 = d.box(ex, 384, w, 30, "add & LayerNorm", kind="norm", size=9)
    e_ff = d.box(ex, 328, w, 46, "feed-forward", "C → 4C → C", kind="param")
    e_n2 = d.box(ex, 272, w, 30, "add & LayerNorm", kind="norm", size=9)
    memory = d.box(ex, 188, w, 46, "memory", "(B, S, C)", kind="tensor", bold=True)
    d_sa = d.box(
        dx,
        454,
        w,
        46,
        "masked self-attention",
        "position i sees targets ≤ i",
        kind="attn",
    )
    d_n1 = d.box(dx, 402, w, 30, "add & LayerNorm", kind="norm", size=9)
    d_ca = d.box(
        dx, 350, w, 46, "cross-attention", "q: decoder; k and v: memory", kind="attn"
    )
    d_n2 = d.box(dx, 298, w, 30, "add & LayerNorm", kind="norm", size=9)
    d_ff = d.box(dx, 246, w, 46, "feed-forward", "C → 4C → C", kind="param")
    d_n3 = d.box(dx, 194, w, 30, "add & LayerNorm", kind="norm", size=9)
    head = d.box(dx, 112, w, 46, "Linear(C, V) + softmax", "(B, T, V)", kind="param")
    probs = d.box(
        dx,
        36,
        w,
        46,
        "next-token probabilities",
        "position i predicts target i + 1",
        kind="loss",
    )
    for a, b in [
        (src, emb_e),
        (emb_e, e_sa),
        (e_sa, e_n1),
        (e_n1, e_ff),
        (e_ff, e_n2),
        (e_n2, memory),
    ]:
        d.arrow(a.top(), b.bottom())
    for a, b in [
        (tgt, emb_d),
        (emb_d, d_sa),
        (d_sa, d_n1),
        (d_n1, d_ca),
        (d_ca, d_n2),
        (d_n2, d_ff),
        (d_ff, d_n3),
        (d_n3, head),
        (head, probs),
    ]:
        d.arrow(a.top(), b.bottom())
    # the memory feeds the cross-attention of every decoder layer
    mx = 350
    d.arrow(memory.right(), (mx, memory.y), (mx, d_ca.y), d_ca.left())
    d.text(mx + 6, (memory.y + d_ca.y) / 2, "K, V", size=9, color=INK, ha="left")
    pad = 14
    d.frame(
        ex - w / 2 - pad,
        e_n2.y0 - 30,
        ex + w / 2 + pad,
        e_sa.y1 + 12,
        "encoder layer × N",
        (ex - w / 2 - 6, e_n2.y0 - 15),
        size=8.5,
    )
    d.frame(
        dx - w / 2 - pad,
        d_n3.y0 - 30,
        dx + w / 2 + pad,
        d_sa.y1 + 12,
        "decoder layer × N",
        (dx - w / 2 - 6, d_n3.y0 - 15),
        size=8.5,
    )
    d.text(
        ex, 92, "post-norm, as in the paper:\nx = LayerNorm(x + sublayer(x))", size=8.5
    )
    return d


def gpt_end_to_end() -> Diagram:
    d = Diagram("gpt_end_to_end", "GPT from token ids to the loss", 690)
    cx, w = 290, 270
    idx = d.box(
        190,
        32,
        190,
        46,
        "token ids idx",
        "(B, T) integers < V",
        kind="tensor",
        bold=True,
    )
    pos = d.box(
        410, 32, 190, 46, "positions 0 … T−1", "(T,), T ≤ block_size", kind="tensor"
    )
    wte = d.box(
        190, 116, 190, 52, "wte: token embedding", "weight (V, C)", kind="param"
    )
    wpe = d.box(
        410,
        116,
        190,
        52,
        "wpe: position embedding",
        "weight (block_size, C)",
        kind="param",
    )
    add = d.plus(cx, 186)
    blocks = d.box(
        cx, 272, w, 56, "h[0] … h[L−1]", "L = n_layer pre-norm blocks", kind="attn"
    )
    ln_f = d.box(cx, 352, w, 44, "ln_f: final LayerNorm", kind="norm")
    lm_head = d.box(
        cx,
        428,
        w,
        52,
        "lm_head: Linear(C, V), no bias",
        "its weight is wte's weight",
        kind="param",
    )
    logits = d.box(cx, 508, w, 46, "logits", "(B, T, V)", kind="tensor", bold=True)
    loss = d.box(
        cx,
        600,
        w,
        56,
        "cross-entropy",
        "mean over B · T positions → one number",
        kind="loss",
    )
    d.arrow(idx.bottom(), wte.top())
    d.arrow(pos.bottom(), wpe.top())
    d.arrow(wte.bottom(), (wte.x, add.y), add.left())
    d.arrow(wpe.bottom(), (wpe.x, add.y), add.right())
    d.arrow(add.bottom(), blocks.top())
    d.arrow(blocks.bottom(), ln_f.top())
    d.arrow(ln_f.bottom(), lm_head.top())
    d.arrow(lm_head.bottom(), logits.top())
    d.arrow(logits.bottom(), loss.top())
    d.text(cx + 12, 222, "x = wte[idx] + wpe[pos]: (B, T, C)", size=8.5, ha="left")
    # weight tying: one matrix, used twice
    tx, tie = 70, PALETTE["param"][1]
    d.arrow(
        wte.left(),
        (tx, wte.y),
        (tx, lm_head.y),
        lm_head.left(),
        color=tie,
        ls=(0, (4, 3)),
        head=False,
    )
    d.text(
        tx + 8,
        (blocks.y + ln_f.y) / 2,
        "tied:\nthe same\n(V, C)\nmatrix",
        size=8.5,
        color=tie,
        ha="left",
    )
    # targets: the ids shifted by one
    px0, px1 = 470, 712
    d.frame(px0, 466, px1, 676, "targets: the next token", (px0 + 12, 482))
    toks = ["The", "cat", "sat", "on", "the"]
    c1 = d.cells(px0 + 46, 502, 4, 40, PALETTE["tensor"][0], labels=toks[:4])
    c2 = d.cells(px0 + 46, 570, 4, 40, PALETTE["loss"][0], labels=toks[1:])
    d.text(px0 + 14, c1.y, "idx", size=8.5, ha="left")
    d.text(px0 + 14, c2.y, "y", size=8.5, ha="left")
    for i in range(4):
        x = c1.x0 + 20 + 40 * i
        d.arrow((x, c1.y1 + 3), (x, c2.y0 - 3), lw=1.0, color=MUTED)
    d.text((c1.x0 + c1.x1) / 2, 640, "position t predicts token t + 1", size=8.5)
    d.arrow((px0, loss.y), loss.right(), color=MUTED, lw=1.0)
    return d


def kv_cache() -> Diagram:
    d = Diagram(
        "kv_cache", "Sampling with a KV cache: prefill, then one token per step", 570
    )
    tok, kcol, vcol, new = PALETTE["tensor"][0], "#dcd1f3", "#f8ddc0", "#b59ce8"
    cell = 34
    # 1. prefill
    d.text(
        16,
        20,
        "1. prefill: the whole prompt in one forward pass",
        size=10,
        color=INK,
        ha="left",
        weight="bold",
    )
    y1 = 84  # the middle of the K and V rows
    prompt = d.cells(24, y1 - cell / 2, 4, cell, tok, labels=["t0", "t1", "t2", "t3"])
    d.text(prompt.x, prompt.y1 + 12, "the prompt, (B, 4)", size=8.5)
    fwd = d.box(
        270,
        y1,
        170,
        76,
        "forward pass",
        "all 4 positions:\nq, k, v each (B, 4, C)",
        kind="attn",
    )
    d.arrow(prompt.right(), fwd.left())
    k1 = d.cells(420, y1 - 2 - cell, 4, cell, kcol, labels=["k0", "k1", "k2", "k3"])
    v1 = d.cells(420, y1 + 2, 4, cell, vcol, labels=["v0", "v1", "v2", "v3"])
    d.arrow(fwd.right(k1.y - y1), k1.left())
    d.arrow(fwd.right(v1.y - y1), v1.left())
    d.text(k1.x1 + 10, k1.y, "K", size=9, color=INK, ha="left")
    d.text(v1.x1 + 10, v1.y, "V", size=9, color=INK, ha="left")
    d.text(k1.x, k1.y0 - 12, "the cache, one per layer", size=8.5)
    d.text(650, y1, "each\n(B, H, T, d)", size=8.5)
    out1 = d.box(
        270, 180, 220, 44, "logits of the last position", "sample t4", kind="loss"
    )
    d.arrow(fwd.bottom(), out1.top())
    # 2. decode steps
    top2 = 232
    d.ax.plot([16, 704], [top2, top2], color="#d0d0d0", lw=1.0, zorder=1)
    d.text(
        16,
        top2 + 20,
        "2. each decode step: only the new token goes through the model",
        size=10,
        color=INK,
        ha="left",
        weight="bold",
    )
    y2 = 316
    t4 = d.cells(40, y2 - cell / 2, 1, cell, tok, labels=["t4"])
    d.text(t4.x, t4.y1 + 12, "(B, 1)", size=8.5)
    qkv = d.box(220, y2, 180, 76, "one position", "q, k, v each (B, 1, C)", kind="attn")
    d.arrow(t4.right(), qkv.left())
    k2 = d.cells(
        420,
        y2 - 2 - cell,
        5,
        cell,
        kcol,
        labels=["k0", "k1", "k2", "k3", "k4"],
        highlight=new,
    )
    v2 = d.cells(
        420, y2 + 2, 5, cell, vcol, labels=["v0", "v1", "v2", "v3", "v4"], highlight=new
    )
    d.arrow(qkv.right(k2.y - y2), k2.left())
    d.arrow(qkv.right(v2.y - y2), v2.left())
    d.text(k2.x1 + 10, k2.y, "K", size=9, color=INK, ha="left")
    d.text(v2.x1 + 10, v2.y, "V", size=9, color=INK, ha="left")
    d.text(k2.x1 - cell / 2, k2.y0 - 12, "k4, v4 appended", size=8.5)
    att = d.box(
        500,
        450,
        300,
        56,
        "attention: q · k0 … k4 → softmax",
        "weights (B, H, 1, 5) mix v0 … v4",
        kind="attn",
    )
    d.arrow(v2.bottom(), (v2.x, att.y0))
    d.arrow(qkv.bottom(), (qkv.x, att.y), att.left())
    d.text(qkv.x + 6, (qkv.y1 + att.y) / 2, "q", size=9, color=INK, ha="left")
    out2 = d.box(
        500,
        530,
        300,
        46,
        "logits (B, 1, V)",
        "sample t5, then repeat with t5",
        kind="loss",
    )
    d.arrow(att.bottom(), out2.top())
    d.text(
        170,
        520,
        "each step reads the old keys\nand values, never recomputes\nthem: its cost grows with T",
        size=8.5,
    )
    return d


def training_step() -> Diagram:
    d = Diagram("training_step", "One optimiser step of the training loop", 720)
    cx, w = 260, 300
    sampler = d.box(
        cx, 34, w, 46, "sampler", "seeded; its state is checkpointed", kind="op"
    )
    batch = d.box(
        cx,
        118,
        w,
        50,
        "micro-batch x, y",
        "(B, T) each; y = x shifted by one",
        kind="tensor",
    )
    fwd = d.box(
        cx,
        198,
        w,
        50,
        "forward under autocast",
        "bf16 or fp16 matmuls, fp32 weights",
        kind="param",
    )
    loss = d.box(cx, 276, w, 46, "loss / grad_accum", kind="loss")
    bwd = d.box(cx, 348, w, 46, "backward()", "gradients add up in .grad", kind="op")
    clip = d.box(
        cx,
        452,
        w,
        46,
        "clip_grad_norm_(grad_clip)",
        "rescale if the norm is above it",
        kind="op",
    )
    step = d.box(
        cx, 530, w, 50, "AdamW step", "lr for this step from the schedule", kind="param"
    )
    zero = d.box(cx, 604, w, 40, "zero_grad()", kind="op")
    ckpt = d.box(
        cx,
        676,
        w,
        48,
        "every ckpt_interval steps: checkpoint",
        "model, optimiser, sampler, step",
        kind="op",
        sub_size=8,
    )
    for a, b in [
        (sampler, batch),
        (batch, fwd),
        (fwd, loss),
        (loss, bwd),
        (bwd, clip),
        (clip, step),
        (step, zero),
        (zero, ckpt),
    ]:
        d.arrow(a.bottom(), b.top())
    d.frame(
        cx - w / 2 - 30,
        84,
        cx + w / 2 + 60,
        400,
        "repeated grad_accum times",
        (cx + w / 2 + 52, 388),
        ha="right",
    )
    lx = cx - w / 2 - 16
    d.arrow(bwd.left(), (lx, bwd.y), (lx, batch.y), batch.left())
    ox = 30
    d.arrow(ckpt.left(), (ox, ckpt.y), (ox, sampler.y), sampler.left())
    d.text(ox + 6, 420, "next\nstep", size=9, color=INK, ha="left")
    d.text(
        580, 250, "one optimiser step\nlearns from\nB · T · grad_accum tokens", size=9
    )
    # the learning-rate schedule: linear warmup, then cosine decay to min_lr
    gx0, gx1, gy0, gy1 = 470, 700, 460, 596
    d.arrow((gx0, gy1), (gx1, gy1), color=MUTED, lw=1.0)
    d.arrow((gx0, gy1), (gx0, gy0 - 6), color=MUTED, lw=1.0)
    warm, lr, min_lr = 0.12, 1.0, 0.12
    xs, ys = [], []
    for i in range(101):
        u = i / 100
        v = (
            lr * u / warm
            if u < warm
            else min_lr
            + 0.5 * (1 + math.cos(math.pi * (u - warm) / (1 - warm))) * (lr - min_lr)
        )
        xs.append(gx0 + 4 + u * (gx1 - gx0 - 14))
        ys.append(gy1 - 4 - v * (gy1 - gy0 - 24))
    d.polyline(xs, ys, PALETTE["param"][1])
    d.text(gx0 + 8, gy0 - 6, "lr", size=8.5, ha="left")
    d.text(gx1, gy1 + 12, "step", size=8.5, ha="right")
    d.text(gx0 + 30, gy1 + 12, "warmup", size=8, ha="center")
    d.text(gx0 + 112, gy0 + 10, "cosine decay", size=8, ha="left")
    d.text(gx1 - 6, gy1 - 34, "min_lr", size=8, ha="right")
    d.arrow((gx0 - 8, step.y), step.right(), color=PALETTE["param"][1], lw=1.0)
    return d


FIGURES = [
    bpe_merge_loop, attention_dataflow, multihead_split_merge, transformer_block,
    encoder_decoder, gpt_end_to_end, kv_cache, training_step,
]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="folder for the SVG files (default: book/figures)",
    )
    parser.add_argument(
        "--png",
        type=Path,
        default=None,
        help="also write PNG previews into this folder",
    )
    parser.add_argument(
        "--draft", action="store_true", help="report layout problems but save anyway"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        for make in FIGURES:
            print(make().save(args.out, args.png, args.draft))
    return 0


if __name__ == "__main__":
    sys.exit(main())
