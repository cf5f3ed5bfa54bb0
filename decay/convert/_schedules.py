"""What both frameworks' conversions ask of an lr: constant or not, its base, its kind."""

from __future__ import annotations

from .. import schedules


def kind(sched) -> str | None:
    """A decay schedule's name ("step", "cosine", ...), None for anything else."""
    return sched.name if isinstance(sched, schedules.Schedule) else None


def is_constant(lr) -> bool:
    return not callable(lr) or kind(lr) == "constant"


def base_value(lr) -> float:
    """α: the lr itself, a schedule's ``base``, or a plain callable's value at step 0."""
    if not callable(lr):
        return float(lr)
    base = getattr(lr, "base", None)
    return float(base) if base is not None else float(lr(0))


def is_integer(x) -> bool:
    return float(x).is_integer()


def plain_callable_issue(sched) -> str:
    return (
        f"the lr is a plain callable ({sched!r}) with no config to write down; use a "
        "decay.schedules schedule. The closest keeps lr at its value at step 0."
    )


def convert_schedule(sched, table: dict, issues: list, missing: str):
    """A framework's learning_rate for decay's lr: a float, or what ``table[kind]`` makes
    of a decay schedule. A plain callable, or a schedule with no entry, gives the closest
    constant and an issue (``missing`` is formatted with ``sched`` and ``base``)."""
    if not callable(sched):
        return float(sched)
    if not isinstance(sched, schedules.Schedule):
        issues.append(plain_callable_issue(sched))
        return float(sched(0))
    convert = table.get(kind(sched))
    if convert is None:
        issues.append(missing.format(sched=sched, base=sched.base))
        return sched.base
    return convert(sched, issues)

