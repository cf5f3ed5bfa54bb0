"""Choosing λ: k-fold cross-validation over a grid, the answer of the source article to
"how do I pick the regularization strength" (交叉验证, 网格搜索).

For every λ the model is trained k times, each time on k−1 folds of the training set
and scored on the held-out fold; the best λ has the lowest mean validation loss. It
is also trained once on the whole training set and scored on the test set, which
shows the train–test gap that weight decay closes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import DecayError
from . import compare, datasets

SCHEMA = "decay.sweep/1"
DEFAULT_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


@dataclass
class Point:
    backend: str
    weight_decay: float
    val_mean: float
    val_std: float
    train_loss: float
    test_loss: float

    @property
    def gap(self) -> float:
        return self.test_loss - self.train_loss


@dataclass
class SweepResult:
    config: compare.Config
    folds: int
    points: list
    best: dict  # backend -> best λ

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "config": asdict(self.config),
            "folds": self.folds,
            "best": self.best,
            "points": [dict(asdict(p), gap=p.gap) for p in self.points],
        }


def fold_indices(n: int, k: int, seed: int):
    """k (train, validation) index pairs from one fixed shuffle of range(n)."""
    if not 2 <= k <= n:
        raise DecayError(f"--folds must be between 2 and the number of training samples ({n}). Received: {k}.")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, k)
    return [(np.concatenate(parts[:i] + parts[i + 1 :]), parts[i]) for i in range(k)]


def _train(name, model, config, data, params0, on_step=None):
    rule, penalty = compare.build_rule(config)
    params, _ = compare.train(name, model, params0, rule, penalty, data, config, on_step)
    return {k: v.astype(np.float64) for k, v in params.items()}


def run(config: compare.Config, grid=DEFAULT_GRID, folds: int = 5, progress=None) -> SweepResult:
    """Cross-validate every λ of ``grid`` on each backend of ``config`` (default: every
    installed one, as ``compare``). ``progress`` (a :class:`compare.Progress`) follows
    the trainings and collects the finished points."""
    grid = [float(v) for v in grid]
    if not grid or any(not np.isfinite(v) or v < 0 for v in grid):
        raise DecayError(f"--grid must hold finite weight decays >= 0. Received: {grid}.")
    names, _ = compare.prepare(config)
    data = datasets.load(config.dataset)
    model = compare.build_model(config, data)
    params0 = model.init_params(config.seed, config.dtype)
    splits = fold_indices(len(data.y_train), folds, config.seed)
    bar = progress if progress is not None else compare.Progress(False)
    bar.total = config.steps * len(names) * len(grid) * (folds + 1)
    points, best = bar.rows, {}
    for name in names:
        for lam in grid:
            run_config = replace(config, weight_decay=lam)
            bar.start(f"sweep {name} lambda={lam:g}", config.steps * (folds + 1))
            scores = []
            for train_idx, val_idx in splits:
                part = data._replace(
                    X_train=data.X_train[train_idx], y_train=data.y_train[train_idx],
                    X_test=data.X_train[val_idx], y_test=data.y_train[val_idx],
                )
                params = _train(name, model, run_config, part, params0, bar.advance)
                scores.append(model.loss(params, part.X_test, part.y_test))
            params = _train(name, model, run_config, data, params0, bar.advance)
            points.append(Point(
                name, lam, float(np.mean(scores)), float(np.std(scores)),
                model.loss(params, data.X_train, data.y_train), model.loss(params, data.X_test, data.y_test),
            ))
        mine = [p for p in points if p.backend == name]
        best[name] = min(mine, key=lambda p: p.val_mean).weight_decay
    bar.close()
    return SweepResult(config, folds, list(points), best)


def format_table(result: SweepResult) -> str:
    config = result.config
    lines = [
        f"{result.folds}-fold cross-validation of weight decay ({config.decay_mode}) for {config.model} "
        f"on {config.dataset}, {config.optimizer}, lr {config.lr}, {config.steps} steps",
        "",
        f"{'backend':<11} {'lambda':>9} {'val mean':>10} {'val std':>9} {'train':>9} {'test':>9} {'gap':>9}",
    ]
    for p in result.points:
        mark = "  <- best" if p.weight_decay == result.best[p.backend] else ""
        lines.append(
            f"{p.backend:<11} {p.weight_decay:>9.2e} {p.val_mean:>10.5f} {p.val_std:>9.5f} "
            f"{p.train_loss:>9.5f} {p.test_loss:>9.5f} {p.gap:>9.5f}{mark}"
        )
    lines.append("")
    for name, lam in result.best.items():
        lines.append(f"best weight decay on {name}: {lam:g}")
    return "\n".join(lines)
