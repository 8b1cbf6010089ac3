"""Figures (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def sensitivity_heatmap(rows, path: Path, title: str) -> Path:
    """Blocks x module types, colour = log10 KL of quantizing that linear alone."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = sorted({r.block for r in rows if r.block is not None})
    modules = sorted({r.module for r in rows if r.block is not None})
    grid = np.full((len(modules), len(blocks)), np.nan)
    for r in rows:
        if r.block is not None:
            grid[modules.index(r.module), blocks.index(r.block)] = np.log10(max(r.kl, 1e-12))
    fig, ax = plt.subplots(figsize=(max(6, len(blocks) * 0.35), 1.2 + 0.45 * len(modules)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    ax.set_yticks(range(len(modules)), modules, fontsize=8)
    ax.set_xlabel("decoder block")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="log10 KL (nats/token)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
