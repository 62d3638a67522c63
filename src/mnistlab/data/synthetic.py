"""Procedural handwritten-like digits: the default dataset, offline and deterministic.

Each digit 0-9 is a few pen strokes in a unit box. We draw a pool of "writers'" versions of
every glyph (control points jittered, stroke width varied) with a distance field, then give
each sample its own random affine warp (rotation, scale, shear, shift) and pixel noise with
`grid_sample`. Everything is batched tensor work, so 60,000 images take about a second.
"""

import math

import torch
import torch.nn.functional as F

from mnistlab import SettingError
from mnistlab.data.splits import Origin, Splits, TensorPairs, normalize, remembered

SIZE = 28
WRITERS = 200  # drawn versions of each glyph: part of the data's recipe
CHUNK = 512  # images warped (and given noise) at a time: a few MB of scratch, not hundreds
WRITER_CHUNK = 25  # writers whose distance fields are drawn at a time (about 20 MB)


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 10):
    """Points along an ellipse arc; angles in degrees, 0 = right, 90 = down (image axes)."""
    angles = torch.linspace(math.radians(start), math.radians(end), n)
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles.tolist()]


# Strokes (polylines) per digit, in a unit box with y pointing down.
GLYPHS: list[list[list[tuple[float, float]]]] = [
    [_arc(0.5, 0.5, 0.28, 0.42, 0, 360, 18)],
    [[(0.32, 0.25), (0.52, 0.08), (0.52, 0.92)]],
    [_arc(0.5, 0.3, 0.28, 0.22, 190, 370, 9) + [(0.72, 0.42), (0.2, 0.9), (0.82, 0.9)]],
    [_arc(0.47, 0.28, 0.26, 0.2, 200, 450, 10), _arc(0.47, 0.7, 0.3, 0.22, 270, 520, 11)],
    [[(0.62, 0.92), (0.62, 0.08), (0.15, 0.64), (0.85, 0.64)]],
    [[(0.78, 0.1), (0.3, 0.1), (0.26, 0.46)] + _arc(0.48, 0.66, 0.3, 0.25, 230, 500, 11)],
    [_arc(0.75, 0.55, 0.45, 0.47, 260, 180, 7) + _arc(0.5, 0.68, 0.26, 0.23, 180, 540, 14)],
    [[(0.18, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    [_arc(0.5, 0.28, 0.22, 0.19, 0, 360, 14), _arc(0.5, 0.7, 0.28, 0.22, 0, 360, 16)],
    [_arc(0.48, 0.32, 0.26, 0.22, 0, 360, 14), [(0.74, 0.32), (0.66, 0.92)]],
]


def _control_points(digit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The glyph's control points (P, 2) and its segments as index pairs (S, 2)."""
    points, pairs = [], []
    for stroke in GLYPHS[digit]:
        first = len(points)
        points += stroke
        pairs += [(i, i + 1) for i in range(first, first + len(stroke) - 1)]
    return torch.tensor(points), torch.tensor(pairs)


def _render_writers(per_digit: int, generator: torch.Generator) -> torch.Tensor:
    """(10, per_digit, 28, 28) glyph images, each drawn with jittered strokes and widths."""
    pixel = (torch.arange(SIZE) + 0.5) / SIZE * 1.5 - 0.25  # the glyph box fills ~19 of 28 px
    grid = torch.stack(torch.meshgrid(pixel, pixel, indexing="xy"), dim=-1).reshape(1, -1, 1, 2)
    out = torch.empty(10, per_digit, SIZE * SIZE)
    for digit in range(10):
        points, pairs = _control_points(digit)
        points = points + 0.045 * torch.randn(per_digit, *points.shape, generator=generator)
        a, b = points[:, pairs[:, 0]].unsqueeze(1), points[:, pairs[:, 1]].unsqueeze(1)
        width = 0.05 + 0.05 * torch.rand(per_digit, 1, generator=generator)
        # WRITER_CHUNK writers at a time: the distance field of all 200 at once takes 150 MB.
        for start in range(0, per_digit, WRITER_CHUNK):
            part = slice(start, start + WRITER_CHUNK)
            dist = _distance(grid, a[part], b[part])
            out[digit, part] = ((width[part] - dist) / 0.04 + 0.5).clamp(0, 1)
    return out.reshape(10, per_digit, SIZE, SIZE)


def _distance(grid: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance to the nearest segment a-b of each writer: (writers, pixels)."""
    ab, ap = b - a, grid - a  # (writers, 1, segs, 2), (writers, pixels, segs, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0, 1)
    return (ap - t.unsqueeze(-1) * ab).norm(dim=-1).amin(dim=-1)


def _warp(
    writers: torch.Tensor, labels: torch.Tensor, style: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Each sample's writer image, with its own random rotation, scale, shear and shift.

    The random draws are made for all samples first, as one would; the images are then warped
    CHUNK at a time into one output: a sampling grid for all 60,000 at once would take 376 MB.
    """
    n = len(labels)
    angle = torch.randn(n, generator=generator) * math.radians(12)
    scale = 1.0 + 0.12 * torch.randn(n, generator=generator)
    shear = 0.25 * torch.randn(n, generator=generator)
    shift = 0.1 * torch.randn(n, 2, generator=generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, shift[:, 0]], 1),
            torch.stack([sin, cos + shear * sin, shift[:, 1]], 1),
        ],
        dim=1,
    )
    base = F.affine_grid(torch.eye(2, 3)[None], (1, 1, SIZE, SIZE), align_corners=False)
    base = torch.cat([base.reshape(-1, 2), torch.ones(SIZE * SIZE, 1)], dim=1)
    out = torch.empty(n, SIZE, SIZE)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        grid = (base @ theta[part].mT).reshape(-1, SIZE, SIZE, 2)
        images = writers[labels[part], style[part]].unsqueeze(1)
        out[part] = F.grid_sample(images, grid, align_corners=False).squeeze(1)
    return out


def generate(num_samples: int, seed: int, writers_per_digit: int = WRITERS) -> TensorPairs:
    """`num_samples` labelled digit images in [0, 1], the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    writers = _render_writers(writers_per_digit, generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    style = torch.randint(0, writers_per_digit, (num_samples,), generator=generator)
    images = _warp(writers, labels, style, generator)
    images.mul_(0.7 + 0.3 * torch.rand(num_samples, 1, 1, generator=generator))
    # The noise is drawn as one draw would (torch.randn), CHUNK images at a time, in place:
    # each chunk is a whole number of 16-value blocks, which is how torch draws normals.
    for start in range(0, num_samples, CHUNK):
        part = images[start : start + CHUNK]
        part.add_(torch.randn(part.shape, generator=generator).mul_(0.15))
    return TensorPairs(images.clamp_(0, 1), labels)


def synthetic_digits(num_samples: int, val_fraction: float, seed: int) -> Splits:
    """Synthetic digits split into training and validation, normalised with training stats."""
    num_val = round(num_samples * val_fraction)
    if not 0 < num_val < num_samples:  # checked before drawing: no time lost on a bad split
        raise SettingError(
            f"dataset.source.num_samples={num_samples} with dataset.source.val_fraction="
            f"{val_fraction} gives {num_val} validation and {num_samples - num_val} training "
            "samples: each split needs at least one; raise num_samples or change val_fraction"
        )

    recipe = f"synthetic_digits(num_samples={num_samples}, val_fraction={val_fraction}, "
    origin = Origin(f"{recipe}seed={seed}, writers_per_digit={WRITERS})", drawn=True)

    def draw() -> Splits:
        data = generate(num_samples, seed, WRITERS)
        train = TensorPairs(data.inputs[num_val:], data.targets[num_val:])
        val = TensorPairs(data.inputs[:num_val], data.targets[:num_val])
        return normalize(Splits(train=train, val=val, num_classes=10, origin=origin))

    # A sweep's earlier job in this process may have drawn them already.
    return remembered(("synthetic", num_samples, num_val, seed), draw)
