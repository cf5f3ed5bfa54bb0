"""The figures of ``compare --plot`` and ``sweep --plot`` (matplotlib, imported only
when a plot is asked for)."""

from __future__ import annotations

import numpy as np

from ..errors import DecayError

SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # formats matplotlib writes without extra packages


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise DecayError("--plot needs matplotlib. Install it with: pip install 'decay[plot]'") from None
    return plt


def compare(result, path: str) -> None:
    """Training-loss curves per row (log scale); for the built-in 1-D data set also the
    fitted curve with and without weight decay, which shows what the decay does."""
    plt = _pyplot()
    curve = result.undecayed is not None
    monitored = getattr(result, "monitor", None) is not None
    if monitored:  # a second row: per-layer norms (decay/app/monitor.py)
        from .monitor import plot as plot_monitor

        fig, grid = plt.subplots(2, 2, figsize=(11, 8.4), dpi=120)
        axes = grid[0] if curve else grid[0][0]
        plot_monitor(grid[1][0], grid[1][1], result.monitor)
        if not curve:
            grid[0][1].axis("off")
    else:
        fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 7, 4.2), dpi=120)
    _loss_curves(axes[0] if curve else axes, result)
    if curve:
        _fitted_function(axes[1], result)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _loss_curves(ax, result):
    config = result.config
    styles = ["-", "--", ":", "-."]
    for i, row in enumerate(result.rows):
        label = f"{row.backend} ({row.optimizer})"
        ax.plot(np.arange(1, len(row.losses) + 1), row.losses, styles[i % len(styles)], label=label, linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title(
        f"{config.model} on {config.dataset}: {config.optimizer}, weight decay {config.weight_decay} "
        f"({config.decay_mode})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def _fitted_function(ax, result):
    config, data, model = result.config, result.data, result.model
    x_train, x_test = data.raw
    grid = np.linspace(min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max()), 400)
    ax.plot(x_test, data.y_test, ".", color="0.75", markersize=3, label="test data")
    ax.plot(x_train, data.y_train, "o", color="black", markersize=4, label="training data")
    for params, label, style in (
        (result.undecayed, "no weight decay", "--"),
        (result.rows[0].params, f"weight decay {config.weight_decay} ({result.rows[0].backend})", "-"),
    ):
        evaluation = {k: v.astype(np.float64) for k, v in params.items()}
        test = model.loss(evaluation, data.X_test, data.y_test)
        ax.plot(grid, model.predict(evaluation, data.features(grid))[:, 0], style, linewidth=1.6,
                label=f"{label}: test loss {test:.3f}")
    ax.set_ylim(data.y_test.min() - 0.5, data.y_test.max() + 0.5)
    ax.set_xlabel("x")
    ax.set_title("what the decay does: the fitted function", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def sweep(result, path: str) -> None:
    """Validation loss (mean ± std) and the train–test gap against λ, log axis; λ = 0
    is drawn as a dotted line since a log axis has no zero."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=120)
    for name in result.best:
        pts = [p for p in result.points if p.backend == name]
        pos = [p for p in pts if p.weight_decay > 0]
        lam = np.array([p.weight_decay for p in pos])
        mean = np.array([p.val_mean for p in pos])
        std = np.array([p.val_std for p in pos])
        line = left.plot(lam, mean, "o-", label=f"{name}: validation")[0]
        left.fill_between(lam, mean - std, mean + std, alpha=0.15, color=line.get_color())
        right.plot(lam, [p.gap for p in pos], "s-", label=f"{name}: test − train", color=line.get_color())
        zero = [p for p in pts if p.weight_decay == 0]
        if zero:
            left.axhline(zero[0].val_mean, ls=":", color=line.get_color(), label=f"{name}: λ = 0")
            right.axhline(zero[0].gap, ls=":", color=line.get_color())
        left.axvline(result.best[name], ls="--", color="grey", alpha=0.6)
    for ax, title in ((left, "validation loss"), (right, "train–test gap")):
        ax.set_xscale("log")
        ax.set_xlabel("weight decay λ")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
