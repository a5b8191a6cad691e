"""Seed statistics for `hybridlm compare`: a mean with its interval per metric, and rankings with ties.

    t_cdf / t_ppf        Student's t distribution (pure Python: the regularised incomplete beta function)
    summarize(values)    mean, sample standard deviation, spread (half the range) and the Student t interval
    welch(a, b)          Welch's unequal-variance t-test between two models' per-seed values
    rank(groups)         a ranking per metric in which differences within noise are ties

The rules, as the report states them:
- **Interval**: for n seeds with mean m and sample standard deviation s, the (1 - alpha) interval is
  m ± t_{1 - alpha/2, n - 1} s / sqrt(n) (Student t, the seeds taken as independent draws). With one seed there
  is no interval ("one seed: no interval"), never an invented one.
- **Tie**: model a beats model b on a metric when Welch's two-sided t-test on their per-seed values gives
  p < alpha and a's mean is the better one; otherwise they tie (within noise). A model with one seed cannot be
  tested, so it ties with every other. Each pair is tested at alpha on its own (no correction for the number
  of pairs: with k models there are k(k-1)/2 tests, so an occasional "win" at alpha = 0.05 is expected by chance).
- **Rank**: 1 + the number of models that beat it. Models no one beats share rank 1; a *clear winner* is the one
  model that beats every other.
Two seeds give t_{0.975, 1} = 12.7: only differences far beyond the seed spread count, which is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05


# -- Student's t -----------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (df may be fractional, as Welch's is)."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on t_cdf; p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p}: must be in (0, 1)")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# -- one model's seeds ----------------------------------------------------------------------------------------
def summarize(values: list[float], alpha: float = ALPHA) -> dict:
    """-> {n, mean, sd, spread, min, max, lo, hi, half_width}; sd, lo, hi, half_width are None for one seed."""
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = sum(values) / n
    out = {"n": n, "mean": mean, "spread": (max(values) - min(values)) / 2, "min": min(values), "max": max(values),
           "sd": None, "lo": None, "hi": None, "half_width": None, "level": 1 - alpha}
    if n > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, lo=mean - half, hi=mean + half, half_width=half)
    return out


# -- two models -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Welch:
    diff: float  # mean(a) - mean(b)
    t: float
    df: float
    p: float  # two-sided
    lo: float  # (1 - alpha) interval of the difference
    hi: float


def welch(a: list[float], b: list[float], alpha: float = ALPHA) -> Welch | None:
    """Welch's t-test of mean(a) = mean(b), two-sided; None when either side has one value (no variance to test
    against). Both variances zero: p = 0 if the means differ (every seed disagrees the same way), else 1."""
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = summarize(a), summarize(b)
    va, vb = sa["sd"] ** 2 / len(a), sb["sd"] ** 2 / len(b)
    diff, se = sa["mean"] - sb["mean"], math.sqrt(va + vb)
    if se == 0.0:
        p = 0.0 if diff != 0.0 else 1.0
        return Welch(diff, math.copysign(math.inf, diff) if diff else 0.0, math.inf, p, diff, diff)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = diff / se
    half = t_ppf(1 - alpha / 2, df) * se
    return Welch(diff, t, df, 2.0 * (1.0 - t_cdf(abs(t), df)), diff - half, diff + half)


def beats(a: list[float], b: list[float], higher_is_better: bool, alpha: float = ALPHA) -> bool:
    """a is significantly better than b (the tie rule of the module docstring)."""
    w = welch(a, b, alpha)
    return w is not None and w.p < alpha and (w.diff > 0) == higher_is_better and w.diff != 0


# -- a ranking ------------------------------------------------------------------------------------------------
def rank(groups: dict[str, list[float]], higher_is_better: bool, alpha: float = ALPHA) -> list[dict]:
    """-> one entry per model, best mean first: {label, rank, beats, beaten_by, tested}. rank = 1 + the number of
    models that beat it; tested = it has >= 2 seeds (a one-seed model ties with everyone)."""
    order = sorted(groups, key=lambda k: sum(groups[k]) / len(groups[k]), reverse=higher_is_better)
    out = []
    for a in order:
        won = [b for b in order if b != a and beats(groups[a], groups[b], higher_is_better, alpha)]
        lost = [b for b in order if b != a and beats(groups[b], groups[a], higher_is_better, alpha)]
        out.append({"label": a, "rank": 1 + len(lost), "beats": won, "beaten_by": lost, "tested": len(groups[a]) > 1})
    return out


def clear_winner(ranking: list[dict]) -> str | None:
    """The one model that beats every other, or None."""
    return next((r["label"] for r in ranking if len(r["beats"]) == len(ranking) - 1 and len(ranking) > 1), None)
