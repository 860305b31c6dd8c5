"""Point labels that never overlap one another, the points, or the plot's edges.

Greedy placement (as a person would do it): each label tries offsets around its point, nearest
first, and takes the first whose box overlaps no placed label, no marker and stays inside the
axes; when none fits it goes to the free spot farthest from everything, joined to its point by a
thin line. Boxes are measured by the figure's own renderer, so the check is exact for the fonts
and sizes used.
"""

from __future__ import annotations

from collections.abc import Sequence

OFFSETS = [(dx, dy) for r in (6, 12, 20, 30) for dx, dy in
           ((r, r * 0.4), (r, -r), (-r, r * 0.4), (-r, -r), (0, r), (0, -r * 1.6), (r * 1.4, 0), (-r * 1.4, 0))]


LEADER = {"arrowstyle": "-", "color": "0.6", "linewidth": 0.5, "shrinkA": 1, "shrinkB": 3}


def _overlaps(a, b, pad: float = 1.5) -> bool:
    return not (a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0 or b.y1 + pad <= a.y0)


def place_labels(ax, points: Sequence[tuple[float, float]], texts: Sequence[str], *, fontsize: float = 7,
                 marker_px: float = 6) -> list:
    """Annotate each point with its text without overlaps; returns the annotation artists."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()  # runs the layout once, so data -> pixel positions are final ...
    fig.set_layout_engine("none")  # ... and stay so when the figure is saved
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for x, y in points:
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - marker_px, py - marker_px, px + marker_px, py + marker_px))
    placed = []
    for (x, y), text in zip(points, texts):
        chosen = None
        for dx, dy in OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            far = abs(dx) + abs(dy) > 24  # far from its point: a thin leader line says whose label it is
            artist = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                 ha=ha, va=va, arrowprops=LEADER if far else None)
            box = _text_box(artist, renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(_overlaps(box, t) for t in taken):
                chosen = (artist, box)
                break
            artist.remove()
        if chosen is None:  # crowded: the offset with the fewest collisions, with a leader line
            best = None
            for dx, dy in OFFSETS[-8:]:
                artist = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                     ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                                     arrowprops=LEADER)
                box = _text_box(artist, renderer)
                outside = not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1)
                score = sum(_overlaps(box, t) for t in taken) + 100 * outside
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, artist, box)
                else:
                    artist.remove()
            assert best is not None
            chosen = (best[1], best[2])
        taken.append(chosen[1])
        placed.append(chosen[0])
    return placed


def _text_box(artist, renderer):
    """The box of an annotation's text alone (its leader line starts at the point and would always
    collide with the point's own marker)."""
    from matplotlib.text import Text

    artist.update_positions(renderer)  # where the text goes for its offset, as Annotation does when drawn
    return Text.get_window_extent(artist, renderer)


def label_boxes(ax, labels: Sequence) -> list:
    """The labels' text boxes in pixels, as drawn (for checking placement)."""
    renderer = ax.figure.canvas.get_renderer()
    return [_text_box(a, renderer) for a in labels]


def any_overlap(boxes: Sequence) -> bool:
    return any(_overlaps(a, b, pad=0) for i, a in enumerate(boxes) for b in boxes[i + 1:])
