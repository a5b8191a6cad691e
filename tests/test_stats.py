"""analysis/stats.py against answers derived here: Student's t in closed form (df 1, 2, 4 and the normal limit),
intervals and Welch tests on hand-made seeds, and rankings whose ties follow from the rule."""

import math

import pytest

from hybridlm.analysis import stats


# closed forms of Student's t CDF: df 1 (Cauchy) and 2
def _cdf1(t):
    return 0.5 + math.atan(t) / math.pi


def _cdf2(t):
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


@pytest.mark.parametrize("t", [-7.0, -1.3, 0.0, 0.4, 2.5, 12.7])
def test_t_cdf_closed_forms(t):
    assert stats.t_cdf(t, 1) == pytest.approx(_cdf1(t), abs=1e-12)
    assert stats.t_cdf(t, 2) == pytest.approx(_cdf2(t), abs=1e-12)
    assert stats.t_cdf(t, math.inf) == pytest.approx(0.5 * (1 + math.erf(t / math.sqrt(2))), abs=1e-15)


def test_t_cdf_df4_closed_form():
    # df = 4: F(t) = 1/2 + (3/4) u (1 - u^2 / 3) with u = t / sqrt(4 + t^2) (the series for even df)
    for t in (-3.0, 0.7, 3.674):
        u = t / math.sqrt(4 + t * t)
        assert stats.t_cdf(t, 4) == pytest.approx(0.5 + 0.75 * u * (1 - u * u / 3), abs=1e-12)


def test_t_ppf_inverts_the_closed_forms():
    assert stats.t_ppf(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # 12.706
    p = 0.975
    assert stats.t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)  # 4.303
    assert stats.t_ppf(0.975, math.inf) == pytest.approx(1.959963985, rel=1e-8)
    assert stats.t_ppf(0.025, 2) == pytest.approx(-stats.t_ppf(0.975, 2))
    with pytest.raises(ValueError, match="p=1"):
        stats.t_ppf(1, 3)


def test_summarize_interval_and_one_seed():
    s = stats.summarize([1.0, 2.0, 3.0])  # mean 2, sd 1, half width t_{.975,2} / sqrt(3)
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert (s["n"], s["mean"], s["sd"], s["spread"]) == (3, 2.0, 1.0, 1.0)
    assert s["half_width"] == pytest.approx(t2 / math.sqrt(3)) and s["lo"] == pytest.approx(2 - t2 / math.sqrt(3))
    one = stats.summarize([0.4])
    assert one["mean"] == 0.4 and one["sd"] is None and one["lo"] is None and one["half_width"] is None


def test_welch_by_hand():
    # a = 1, 2, 3 and b = 4, 5, 6: diff -3, se = sqrt(1/3 + 1/3), df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    w = stats.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    se = math.sqrt(2 / 3)
    assert w.diff == -3.0 and w.t == pytest.approx(-3 / se) and w.df == pytest.approx(4.0)
    u = (3 / se) / math.sqrt(4 + (3 / se) ** 2)
    assert w.p == pytest.approx(2 * (1 - (0.5 + 0.75 * u * (1 - u * u / 3))), rel=1e-9)  # 0.0213
    assert w.p < 0.05 and w.lo < -3 < w.hi < 0
    assert stats.welch([1.0], [2.0, 3.0]) is None  # one seed: nothing to test
    assert stats.welch([1.0, 1.0], [1.0, 1.0]).p == 1.0 and stats.welch([0.0, 0.0], [0.5, 0.5]).p == 0.0


def test_rank_clear_winner_ties_and_one_seed():
    lower = {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9], "c": [2.05, 1.85, 2.2]}
    r = {x["label"]: x for x in stats.rank(lower, higher_is_better=False)}
    assert next(x["label"] for x in stats.rank(lower, False)) == "a"
    assert r["a"]["rank"] == 1 and set(r["a"]["beats"]) == {"b", "c"}
    assert r["b"]["rank"] == r["c"]["rank"] == 2 and "c" not in r["b"]["beats"]  # b and c tie within noise
    assert stats.clear_winner(stats.rank(lower, False)) == "a"
    # overlapping seeds: nobody beats anybody, everyone shares rank 1, no winner
    close = {"a": [1.0, 1.4], "b": [1.1, 1.5]}
    assert [x["rank"] for x in stats.rank(close, False)] == [1, 1]
    assert stats.clear_winner(stats.rank(close, False)) is None
    # one seed each: untested, all tie
    single = stats.rank({"a": [0.9], "b": [0.1]}, higher_is_better=True)
    assert [x["label"] for x in single] == ["a", "b"] and all(x["rank"] == 1 and not x["tested"] for x in single)
    # higher is better flips the direction
    assert stats.clear_winner(stats.rank({"a": [0.9, 0.91], "b": [0.1, 0.11]}, True)) == "a"
