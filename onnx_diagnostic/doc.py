"""
Helpers for the documentation: the small labelled picture which ends every example.

>>> from onnx_diagnostic.doc import plot_legend
>>> ax = plot_legend("dynamic shapes\\nfor cache", "torch.export.export", "tomato")
>>> ax.texts[0].get_text()
'dynamic shapes\\nfor cache'
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_legend"]


def plot_legend(text: str, text_bottom: str = "", color: str = "green", fontsize: int = 15) -> Any:
    """
    Draws a small square figure with ``text`` in a rounded box of colour ``color``
    and ``text_bottom`` written below in a smaller font. It works without a display
    (matplotlib falls back to the Agg backend when none is available).

    :param text: main text, may contain new lines
    :param text_bottom: text written at the bottom, may be empty
    :param color: any matplotlib colour (``"green"``, ``"tomato"``, ``"#336699"``)
    :param fontsize: font size of the main text
    :return: the :class:`matplotlib.axes.Axes`

    >>> ax = plot_legend("Tiny-LLM", "torch.export.export", "tomato")
    >>> ax.figure.savefig("legend.png")  # doctest: +SKIP
    """
    import matplotlib.colors
    import matplotlib.pyplot as plt

    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    if not isinstance(text_bottom, str):
        raise TypeError(f"text_bottom must be a string, not {type(text_bottom).__name__}")
    if not matplotlib.colors.is_color_like(color):
        raise ValueError(f"color={color!r} is not a matplotlib colour")

    fig, ax = plt.subplots(1, 1, figsize=(2, 2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    # light background, the text in the given colour inside a rounded box of that colour
    face = matplotlib.colors.to_rgba(color, alpha=0.15)
    ax.text(
        0.5,
        0.55,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        color=color,
        bbox=dict(boxstyle="round,pad=0.6", facecolor=face, edgecolor=color, linewidth=2),
    )
    if text_bottom:
        ax.text(
            0.5,
            0.05,
            text_bottom,
            ha="center",
            va="bottom",
            fontsize=max(fontsize * 0.5, 6),
            color="black",
        )
    fig.tight_layout()
    return ax
