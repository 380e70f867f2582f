"""Figures of Wood et al. 2021 that explain the classifier: the t-SNE map of report representations
(Fig. 4) and word-level attention maps (Fig. 5). Pure functions on arrays; commands in ``tools/``."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def tsne_map(vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE coordinates (scikit-learn; PCA initialisation, perplexity capped for small sets)."""
    from sklearn.manifold import TSNE

    n = len(vectors)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 reports, got {n}.")
    perplexity = min(perplexity, (n - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(vectors, dtype=np.float64)
    )


def plot_embedding_maps(
    panels: Mapping[str, np.ndarray], labels: np.ndarray, path: str | Path, label_name: str
) -> Path:
    """Side-by-side scatter plots of 2-D maps, abnormal (label 1) red and normal (0) blue (Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, xy) in zip(axes[0], panels.items(), strict=True):
        for value, colour, name in (
            (0, "tab:blue", f"{label_name} = 0"),
            (1, "tab:red", f"{label_name} = 1"),
        ):
            sel = labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, c=colour, alpha=0.7, label=f"{name} (n={int(sel.sum())})")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def word_weights(
    spans: Sequence[tuple[int | None, int, int]], token_weights: Sequence[float]
) -> list[tuple[int, int, float]]:
    """Sub-word attention merged to words: ``(start, end, weight)`` per word, weight = the sum of its
    sub-words' weights (the attention mass on the word); special tokens ([CLS], [SEP]) are left out."""
    words: dict[int, list[float]] = {}
    for (word, start, end), w in zip(spans, token_weights, strict=False):
        if word is None:
            continue
        entry = words.setdefault(word, [start, end, 0.0])
        entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
        entry[2] += float(w)
    return [(int(s), int(e), w) for s, e, w in (words[k] for k in sorted(words))]


def attention_html(text: str, words: Sequence[tuple[int, int, float]]) -> str:
    """``text`` as HTML with every word shaded by its weight (darkest = the report's largest weight);
    the weight shows on hover. Text between words (spaces, punctuation) stays unshaded."""
    top = max((w for _, _, w in words), default=0.0) or 1.0
    out, pos = [], 0
    for start, end, w in words:
        out.append(html.escape(text[pos:start]))
        alpha = w / top
        out.append(
            f'<span style="background: rgba(220, 38, 38, {alpha:.3f})" title="{w:.4f}">'
            f"{html.escape(text[start:end])}</span>"
        )
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def attention_page(entries: Sequence[Mapping[str, object]], title: str) -> str:
    """A self-contained HTML page: per report its id, label, prediction, probability and shaded text."""
    rows = []
    for e in entries:
        rows.append(
            "<section><h3>{id}</h3><p class=meta>{kind} &middot; label {y} &middot; prediction {pred} "
            "&middot; probability {prob:.3f}</p><p class=text>{body}</p></section>".format(
                id=html.escape(str(e["id"])),
                kind=html.escape(str(e.get("kind", ""))),
                y=e["y"],
                pred=e["pred"],
                prob=float(e["prob"]),
                body=e["html"],
            )
        )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "section{border-bottom:1px solid #ddd;padding:.5em 0}.meta{color:#555;font-size:90%}"
        ".text{line-height:1.8;white-space:pre-wrap}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        "<p>Each word is shaded by the attention pooling's weight (sub-word weights summed per word; "
        "darkest = the largest weight in that report). Wood et al. 2021, Fig. 5.</p>"
        + "".join(rows)
        + "</body></html>\n"
    )
