"""Anytime-valid statistics for checks that look at their data every second.

Every bound here is a confidence sequence: with probability >= 1 - alpha it holds at every sample size at once,
so a check may look after every request and stop on the first decisive look without inflating its error rate
(Ville's inequality on a nonnegative martingale, Howard, Ramdas, McAuliffe, Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021). A fixed-n test re-run at each look
does not have this property: its false alarms grow with the number of looks (Lindon, Sanden, Shirikian,
"Rapid Regression Detection in Software Deployments through Sequential Testing", KDD 2022).

Pure numpy/scipy, deterministic, no global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from releasegate.verifiers.stats import nearest_rank

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@cache
def _special() -> Any:
    """scipy.special, imported at the first judgement rather than with this module: thresholds are parsed when
    a release starts (plugins/release_vars.py), and the ~0.4 s import then delayed every run's start, also
    runs that stop on a usage error or judge nothing; a release pays it in its first load instead."""
    import scipy.special

    return scipy.special

RATE_PRIOR_SCALES: tuple[float, ...] = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)
"""Mixing distribution of the rate confidence sequence: an equal-weight mixture of Beta(1, b) priors.

Beta(1, b) has its mass at rates around 1/b, so the mixture covers rates from ~50% (b = 1, the uniform prior)
down to ~0.01%, a log-uniform spread over the scales where error rates live. The price of mixing five priors
is log(5) nats on the boundary (an alpha five times smaller at worst); the gain, where releases live, is a
bound ~2x tighter than the uniform prior alone: 0 events in 700 trials gives an upper bound of 0.81% at
alpha = 0.01, against 1.58% for the uniform prior (fixed-n Clopper-Pearson: 0.75%)."""


@dataclass(frozen=True)
class Interval:
    """A closed interval [lower, upper]; `upper` may be math.inf (an unbounded quantile)."""

    lower: float
    upper: float

    def __contains__(self, value: float) -> bool:
        return self.lower <= value <= self.upper


def rate_interval(events: int, trials: int, *, alpha: float) -> Interval:
    """Time-uniform confidence sequence for a Bernoulli rate.

    With probability >= 1 - alpha the interval contains the true rate at every `trials` simultaneously, so it
    may be looked at after every request. Exact (no normal approximation), valid with 0 events;
    trials == 0 gives Interval(0, 1).

    Method: the beta-binomial mixture boundary of Howard et al. (Ann. Statist. 2021, section 3), with the
    mixture of `RATE_PRIOR_SCALES` instead of one Beta prior. For any fixed p, the mixture likelihood ratio
    m(S, n) / (p^S (1-p)^(n-S)) is a nonnegative martingale with mean 1 when p is the true rate, so by Ville's
    inequality it ever reaches 1/alpha with probability <= alpha: the set of p where it stays below 1/alpha
    is the confidence sequence. One martingale gives both sides, so the whole alpha serves each side.

    The result is widened to contain the fixed-n Clopper-Pearson interval at the same alpha: at a handful of
    trials the small-rate prior would otherwise claim a tighter upper bound than a single look can (a
    superset of a confidence sequence is still one, so validity is untouched).
    """
    _check_counts(events, trials)
    _check_alpha(alpha)
    if trials == 0:
        return Interval(0.0, 1.0)
    threshold = math.log(alpha) + _log_mixture_marginal(events, trials)
    lower, upper = _mixture_bounds(events, trials, threshold)
    exact = _clopper_pearson(events, trials, alpha)
    return Interval(min(lower, exact.lower), max(upper, exact.upper))


def _check_counts(events: int, trials: int) -> None:
    if trials < 0 or not 0 <= events <= trials:
        raise ValueError(f"need 0 <= events <= trials, got {events} events in {trials} trials")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_mixture_marginal(events: int, trials: int) -> float:
    """log m(S, n): the probability of the observed sequence under the mixture of Beta(1, b) priors."""
    # The Beta(1, b) normaliser B(1, b) is 1 / b.
    terms = [_log_beta(events + 1, trials - events + b) + math.log(b) for b in RATE_PRIOR_SCALES]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))


def _log_likelihood(events: int, trials: int, rate: float) -> float:
    # Written term by term so that 0 * log(0) is 0: rate 0 with no events, or rate 1 with no non-events.
    value = 0.0
    if events:
        value += events * math.log(rate) if rate > 0 else -math.inf
    if trials - events:
        value += (trials - events) * math.log1p(-rate) if rate < 1 else -math.inf
    return value


def _mixture_bounds(events: int, trials: int, threshold: float) -> tuple[float, float]:
    """The rates where the log likelihood S log p + F log(1 - p) is at least `threshold`: an interval around
    S / n, the likelihood being log-concave. Each end is the root of a concave increasing function (in log p
    for the lower end, in log(1 - p) for the upper), found by Newton's method from the outside: on a concave
    function the tangent never overshoots the root, so the iteration converges monotonically."""
    failures = trials - events
    lower = math.exp(_concave_root(events, failures, threshold)) if events else 0.0
    upper = -math.expm1(_concave_root(failures, events, threshold)) if failures else 1.0
    return lower, upper


def _concave_root(a: int, b: int, threshold: float) -> float:
    """The t <= log(a / (a + b)) where a t + b log(1 - e^t) = threshold (a >= 1, threshold below the maximum).

    Starts at threshold / a - 1, where the left side is below the threshold (b log(1 - e^t) <= 0)."""
    t = threshold / a - 1.0
    for _ in range(200):
        value = a * t - threshold
        slope = float(a)
        if b:
            e = math.exp(t)
            value += b * math.log1p(-e)
            slope -= b * e / (1.0 - e)
        step = -value / slope
        t += step
        if step <= 1e-13 * max(1.0, abs(t)):
            break
    return t


def _clopper_pearson(events: int, trials: int, alpha: float) -> Interval:
    """The exact fixed-n interval, alpha/2 on each side."""
    lower = 0.0 if events == 0 else float(_special().betaincinv(events, trials - events + 1, alpha / 2))
    upper = 1.0 if events == trials else float(_special().betaincinv(events + 1, trials - events, 1 - alpha / 2))
    return Interval(lower, upper)


def _in_rate_interval(events: int, trials: int, rate: float, alpha: float) -> tuple[bool, bool]:
    """(rate >= lower, rate <= upper) of `rate_interval(events, trials)`, without solving for the bounds.

    Quantile bounds need this for many event counts at one rate: a direct test is a few lgamma calls, where
    solving for the bounds is a root search. A rate is inside the mixture sequence when its likelihood is at
    least alpha times the mixture marginal; inside Clopper-Pearson by the binomial tail duality.
    """
    if trials == 0:
        return True, True
    inside_mixture = _log_likelihood(events, trials, rate) >= math.log(alpha) + _log_mixture_marginal(events, trials)
    observed = events / trials
    above_lower = rate >= observed or inside_mixture or _cp_above_lower(events, trials, rate, alpha)
    below_upper = rate <= observed or inside_mixture or _cp_below_upper(events, trials, rate, alpha)
    return above_lower, below_upper


def _cp_above_lower(events: int, trials: int, rate: float, alpha: float) -> bool:
    # rate >= Clopper-Pearson lower  <=>  P(Binomial(trials, rate) >= events) >= alpha / 2
    return events == 0 or float(_special().bdtrc(events - 1, trials, rate)) >= alpha / 2


def _cp_below_upper(events: int, trials: int, rate: float, alpha: float) -> bool:
    # rate <= Clopper-Pearson upper  <=>  P(Binomial(trials, rate) <= events) >= alpha / 2
    return events == trials or float(_special().bdtr(events, trials, rate)) >= alpha / 2


@lru_cache(maxsize=1 << 16)
def quantile_ranks(count: int, q: float, alpha: float) -> tuple[int, int]:
    """1-based ranks (lower, upper) of the order statistics that bound the q-quantile among `count` values.

    lower == 0 means no lower bound yet, upper == count + 1 no upper bound. A pure function of its
    arguments, cached because looks repeat the same counts across quantiles and arms.

    Howard & Ramdas (Bernoulli 2022, section 2): couple each observation to a uniform U_i; the number of
    observations at or below the true quantile is at least, and the number strictly below it at most, the
    number of U_i <= q, a Binomial(n, q) process. Wherever the rate sequence holds for that process, its
    count lies in [s_lo, s_hi] = {s : q in rate_interval(s, n)}, so at least s_lo observations are <= the
    quantile (X_(s_lo) <= quantile) and at most s_hi are below it (X_(s_hi + 1) >= quantile), at every n.
    The bounds of the rate sequence increase with s, so both ends are found by bisection.
    """
    if count == 0:
        return 0, 1

    def inside(below: int) -> tuple[bool, bool]:
        """(q >= lower, q <= upper) for `below` of `count` values at or below the quantile."""
        if q <= 0.5:
            return _in_rate_interval(below, count, q, alpha)
        # The rate sequence is tuned to small rates: above the median, bound the share above the quantile.
        above_lower, below_upper = _in_rate_interval(count - below, count, 1.0 - q, alpha)
        return below_upper, above_lower

    # Bisect within a few dozen standard deviations of q n first (the sequence is far narrower), checking
    # the bracket's outer end so that the answer is the one the whole range would give.
    centre, spread = q * count, 40.0 * math.sqrt(count * q * (1.0 - q)) + 20.0
    low_start, high_end = max(0, math.floor(centre - spread)), min(count, math.ceil(centre + spread))
    if inside(low_start)[1]:
        low_start = 0
    if inside(high_end)[0]:
        high_end = count
    low_rank = _first(low_start, count, lambda s: inside(s)[1])
    high_count = _last(0, high_end, lambda s: inside(s)[0])
    return low_rank, high_count + 1


def _first(low: int, high: int, holds: Callable[[int], bool]) -> int:
    """The smallest s in [low, high] where the monotone predicate holds (high if it never does before)."""
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _last(low: int, high: int, holds: Callable[[int], bool]) -> int:
    """The largest s in [low, high] where the monotone (true, then false) predicate holds."""
    while low < high:
        middle = (low + high + 1) // 2
        if holds(middle):
            low = middle
        else:
            high = middle - 1
    return low


def quantile_interval(count: int, value_at_rank: Callable[[int], float], q: float, *, alpha: float,
                      upper_value_at_rank: Callable[[int], float] | None = None) -> Interval:
    """Time-uniform confidence sequence on the q-quantile from order statistics (Howard & Ramdas, "Sequential
    estimation of quantiles with applications to A/B-testing and best-arm identification", Bernoulli 2022).

    Derived from the rate sequence on F(quantile) (see `quantile_ranks`): lower and upper are values at ranks,
    `value_at_rank(r)` the r-th smallest of the `count` values (1-based). 0.0 stands for an unbounded lower
    bound (latencies are not negative), math.inf for an unbounded upper bound. Values known only to within a
    histogram bucket give two functions: `value_at_rank` the bucket's lower edge (for the lower bound),
    `upper_value_at_rank` its upper edge (for the upper bound), so the interval holds the quantile wherever
    in its bucket it lies.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    _check_alpha(alpha)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    low_rank, high_rank = quantile_ranks(count, q, alpha)
    lower = float(value_at_rank(low_rank)) if low_rank >= 1 else 0.0
    upper_value = value_at_rank if upper_value_at_rank is None else upper_value_at_rank
    upper = float(upper_value(high_rank)) if high_rank <= count else math.inf
    return Interval(lower, upper)


COUNT_TEST_CONCENTRATION = 4.0
"""Default Dirichlet concentration k of `CountTest`: see its docstring."""

@cache
def _log_ratio_grid() -> npt.NDArray[np.float64]:
    """Log rate ratios (candidate over baseline) at which `CountTest` mixes: 0.02 apart, ratios from 3e-7 to 3e6.

    numpy loads with the first count test (0.1 s), not with every process that imports the thresholds."""
    import numpy as np

    return np.linspace(-15.0, 15.0, 1501)


class CountTest:
    """Lindon-Malek sequential test on two counts (Lindon & Malek, "Anytime-Valid Inference for Multinomial
    Count Data", NeurIPS 2022; applied to canaries by Lindon, Sanden, Shirikian, KDD 2022).

    Are the candidate's events (errors, or requests slower than an SLO latency) more frequent than the
    baseline's, given each arm's exposure (requests)? Conditional on the total number of events, each event
    belongs to the candidate with probability rho (its exposure share) under the null hypothesis of equal
    rates, whatever the common time trend of the load: only the split is tested, so the arms must run
    concurrently. Exact with zero baseline events: nothing is approximated by a normal.

    The statistic is the Bayes factor of a Beta(k rho, k (1 - rho)) mixture over the candidate's share
    against rho (the two-arm Dirichlet mixture of the paper), a nonnegative martingale under the null; the
    p-value is min over looks of 1 / Bayes factor, valid at every look by Ville's inequality.

    Drifting traffic split: the events of each look are attributed with that look's exposure share. The
    mixture is then written over the rate ratio r (candidate share at split rho: rho r / (rho r + 1 - rho)),
    with the prior of the paper at the exposure share of the first look with events (events' labels unused,
    so the prior is fixed before any label is seen), discretised on a grid of log r 0.02 apart with the exact
    prior mass of each cell: a discrete mixing distribution keeps the martingale exact; the grid costs a
    negligible amount of power. At a constant split this is the paper's test.

    One-sided (candidate worse): the p-value only moves at looks where the candidate's observed rate is above
    the baseline's. This keeps the paper's statistic (and its published event counts) and spends alpha on
    rejections in one direction only, conservative by the other side's share.

    Concentration k: with zero baseline events at alpha 0.05, the candidate needs 29 events to reject at a
    50/50 split with the libraries' default k = 100, 12 with k = 10, 8 with k = 2. Smaller k bets on large
    ratios: fast on a broken release, slower on a small regression (the mSPRT mixing trade-off). Total events
    to reject at alpha 0.01 on the expected path, 50/50 split (computed for this choice), for rate ratios
    1.5 / 2 / 3 / 11: k = 100: 344 / 151 / 85 / 45; k = 10: 327 / 113 / 51 / 21; k = 4: 346 / 116 / 49 / 17;
    k = 2: 366 / 121 / 50 / 16. k = 4 is within 6% of the best of these at every ratio, and release errors are
    rare, so the regressions that matter are large ratios on few events.
    """

    def __init__(self, *, alpha: float = 0.01, concentration: float = COUNT_TEST_CONCENTRATION) -> None:
        _check_alpha(alpha)
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        self.alpha = alpha
        self.concentration = concentration
        self._log_prior: npt.NDArray[np.float64] | None = None
        self._log_ratio_sum = _log_ratio_grid() * 0.0
        self._last = (0, 0, 0, 0)
        self._p_value = 1.0

    @property
    def p_value(self) -> float:
        return self._p_value

    def look(self, candidate_events: int, candidate_trials: int, baseline_events: int, baseline_trials: int) -> float:
        """Cumulative counts so far; returns the anytime-valid p-value (non-increasing over looks).

        The events added since the previous look are attributed with that interval's exposure share
        candidate_trials_delta / (both deltas). Counts must not decrease (ValueError).
        """
        counts = (candidate_events, candidate_trials, baseline_events, baseline_trials)
        deltas = [now - before for now, before in zip(counts, self._last, strict=True)]
        if min(deltas) < 0:
            raise ValueError(f"counts must not decrease: {self._last} -> {counts}")
        _check_counts(candidate_events, candidate_trials)
        _check_counts(baseline_events, baseline_trials)
        events_c, trials_c, events_b, trials_b = deltas
        if events_c + events_b == 0:
            self._last = counts
            return self._p_value
        share = self._share(trials_c, trials_b, candidate_trials, baseline_trials)
        log_ratio = _log_likelihood_ratio(events_c, events_b, share)
        if self._log_prior is None:
            self._log_prior = _log_prior_cells(candidate_trials / (candidate_trials + baseline_trials),
                                               self.concentration)
        # State changes only once the look is known to be valid: a rejected look leaves the test as it was.
        self._last = counts
        self._log_ratio_sum += log_ratio
        if candidate_events * baseline_trials > baseline_events * candidate_trials:
            log_terms = self._log_prior + self._log_ratio_sum
            top = float(log_terms.max())
            log_bayes = top + math.log(float(_exp_sum(log_terms - top)))
            self._p_value = min(self._p_value, math.exp(-max(log_bayes, 0.0)))
        return self._p_value

    @staticmethod
    def _share(delta_c: int, delta_b: int, total_c: int, total_b: int) -> float:
        """The candidate's exposure share for this look's events: this interval's, else the running one."""
        if delta_c + delta_b > 0:
            return delta_c / (delta_c + delta_b)
        if total_c + total_b > 0:
            return total_c / (total_c + total_b)
        raise ValueError("events without any trials")


def _exp_sum(values: npt.NDArray[np.float64]) -> float:
    import numpy as np

    return float(np.exp(values).sum())


def _log_prior_cells(share: float, concentration: float) -> npt.NDArray[np.float64]:
    """log prior mass of each grid cell of log r, for a Beta(k rho, k (1 - rho)) prior on the candidate's share
    at split rho (logit share = logit rho + log r). The outer cells take the tails, so the masses sum to 1."""
    import numpy as np

    grid = _log_ratio_grid()
    share = min(max(share, 1e-9), 1 - 1e-9)
    edges = (grid[:-1] + grid[1:]) / 2 + math.log(share / (1 - share))
    special = _special()
    cdf = special.betainc(concentration * share, concentration * (1 - share), special.expit(edges))
    mass = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(mass, 0.0))


def _log_likelihood_ratio(events_c: int, events_b: int, share: float) -> npt.NDArray[np.float64]:
    """log of P(labels | r) / P(labels | r = 1) at every grid ratio, for events split at exposure share rho."""
    if share <= 0.0 or share >= 1.0:
        # One arm had no exposure: its events cannot be attributed by chance. Only happens with events on
        # the exposed arm alone, which carry no information about r.
        if (share <= 0.0 and events_c) or (share >= 1.0 and events_b):
            raise ValueError("events on an arm without exposure")
        return _log_ratio_grid() * 0.0
    import numpy as np

    logit = math.log(share / (1 - share)) + _log_ratio_grid()
    # log sigmoid(z) = -log(1 + e^-z), computed without overflow
    log_candidate = -np.logaddexp(0.0, -logit)
    log_baseline = -np.logaddexp(0.0, logit)
    result: npt.NDArray[np.float64] = (events_c * (log_candidate - math.log(share))
                                       + events_b * (log_baseline - math.log1p(-share)))
    return result


class Decision(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    CONTINUE = "continue"


@dataclass(frozen=True)
class ArmInterval:
    """A comparison's confidence interval on one arm: its rate (quantile None) or one of its quantiles."""

    arm: str  # "candidate" or "baseline"
    quantile: float | None
    interval: Interval


@dataclass(frozen=True)
class Judgement:
    """One look's outcome, with what a report shows: the point value, the bound the decision rests on, the
    statistic and the rule in words; a comparison also gives each arm's own intervals, and the error-count
    comparison the candidate's rate limit this look compared with (the baseline's rate + the tolerance)."""

    decision: Decision
    estimate: float | None
    interval: Interval | None
    statistic: str
    reason: str
    arms: tuple[ArmInterval, ...] = ()
    candidate_limit: float | None = None


def _percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def _points(value: float) -> str:
    return f"{value * 100:+.3g} points"


def _seconds(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value * 1000:.3g} ms"


def _observed_rate(events: int, trials: int) -> float:
    return events / trials if trials else 0.0


def _quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


def judge_rate_limit(events: int, trials: int, *, limit: float, alpha: float, below: bool = True) -> Judgement:
    """Absolute SLO on a rate, by the confidence sequence of `rate_interval`: safe to call at every look.

    below=True: the rate must be < limit (error_rate < 1%; for success_rate >= 99% give events=failures and
    limit=1%, where the sequence is tightest). below=False: the rate must be > limit. PASS when the whole
    interval is inside the limit, FAIL when the whole interval is outside it, else CONTINUE: a true rate at
    the limit passes with probability <= alpha however often one looks.
    """
    interval = rate_interval(events, trials, alpha=alpha)
    estimate = events / trials if trials else None
    statistic = f"{events}/{trials}, interval [{_percent(interval.lower)}, {_percent(interval.upper)}]"
    # The bound that must clear the limit to pass, and the one that must cross it to fail.
    near, far = (interval.upper, interval.lower) if below else (interval.lower, interval.upper)
    near_name, far_name = ("upper", "lower") if below else ("lower", "upper")
    if near < limit if below else near > limit:
        reason = f"{near_name} bound {_percent(near)} {'<' if below else '>'} {_percent(limit)}"
        return Judgement(Decision.PASS, estimate, interval, statistic, reason)
    if far >= limit if below else far <= limit:
        reason = f"{far_name} bound {_percent(far)} {'>=' if below else '<='} {_percent(limit)}"
        return Judgement(Decision.FAIL, estimate, interval, statistic, reason)
    reason = (f"bound [{_percent(interval.lower)}, {_percent(interval.upper)}] still holds {_percent(limit)}: "
              "more requests needed")
    return Judgement(Decision.CONTINUE, estimate, interval, statistic, reason)


def judge_quantile_limit(count: int, value_at_rank: Callable[[int], float], slow_count: int, *, q: float,
                         limit_s: float, alpha: float) -> Judgement:
    """Absolute SLO on a latency quantile, p(q) < limit_s, safe to call at every look.

    p(q) < limit_s exactly when the share of requests slower than limit_s is below 1 - q, so the decision is
    the rate sequence on slow_count / count (the caller counts requests > limit_s): exact, and as tight as
    the rate sequence is at small rates. The bound shown is the quantile's own interval (`quantile_interval`).
    """
    slow = rate_interval(slow_count, count, alpha=alpha)
    shown = quantile_interval(count, value_at_rank, q, alpha=alpha) if count else None
    estimate = float(value_at_rank(nearest_rank(q, count))) if count else None
    name, share = _quantile_name(q), 1.0 - q
    statistic = (f"{slow_count}/{count} slower than {_seconds(limit_s)}, "
                 f"share [{_percent(slow.lower)}, {_percent(slow.upper)}]")
    if slow.upper < share:
        reason = (f"{name} < {_seconds(limit_s)}: at most {_percent(slow.upper)} of requests slower, "
                  f"< {_percent(share)}")
        return Judgement(Decision.PASS, estimate, shown, statistic, reason)
    if slow.lower > share:
        reason = (f"{name} > {_seconds(limit_s)}: at least {_percent(slow.lower)} of requests slower, "
                  f"> {_percent(share)}")
        return Judgement(Decision.FAIL, estimate, shown, statistic, reason)
    reason = (f"share of requests slower than {_seconds(limit_s)} in [{_percent(slow.lower)}, "
              f"{_percent(slow.upper)}] still holds {_percent(share)}: more requests needed")
    return Judgement(Decision.CONTINUE, estimate, shown, statistic, reason)


class ErrorComparison:
    """Candidate vs baseline error (or slow-request) counts, with a tolerance in points; stateful (the count
    test needs the history of the traffic split).

    FAIL when the Lindon-Malek p-value (`CountTest`) is below alpha and the candidate's observed rate exceeds
    the baseline's by more than the tolerance: a significant regression that matters. PASS when the
    candidate's upper bound minus the baseline's lower bound (each a rate sequence at alpha/2, a union bound)
    is within the tolerance: evidence that any regression is within tolerance. Else CONTINUE.
    """

    def __init__(self, *, alpha: float = 0.01, tolerance_abs: float = 0.005,
                 concentration: float = COUNT_TEST_CONCENTRATION) -> None:
        self.alpha = alpha
        self.tolerance_abs = tolerance_abs
        self.test = CountTest(alpha=alpha, concentration=concentration)

    def look(self, cand_events: int, cand_trials: int, base_events: int, base_trials: int) -> Judgement:
        p = self.test.look(cand_events, cand_trials, base_events, base_trials)
        candidate = rate_interval(cand_events, cand_trials, alpha=self.alpha / 2)
        baseline = rate_interval(base_events, base_trials, alpha=self.alpha / 2)
        bound = Interval(candidate.lower - baseline.upper, candidate.upper - baseline.lower)
        observed = _observed_rate(cand_events, cand_trials) - _observed_rate(base_events, base_trials)
        estimate = observed if cand_trials and base_trials else None
        statistic = f"sequential p={p:.2g}"
        arms = (ArmInterval("candidate", None, candidate), ArmInterval("baseline", None, baseline))
        # observed > tolerance is the candidate's rate above this: the limit its failure is judged against
        limit = _observed_rate(base_events, base_trials) + self.tolerance_abs if base_trials else None
        tolerance = _points(self.tolerance_abs).lstrip("+")
        if p < self.alpha and observed > self.tolerance_abs:
            reason = f"p={p:.2g} < {self.alpha:g} and {_points(observed)} > {tolerance} tolerance"
            return Judgement(Decision.FAIL, estimate, bound, statistic, reason, arms, limit)
        if bound.upper <= self.tolerance_abs:
            reason = f"difference at most {_points(bound.upper)} <= {tolerance} tolerance"
            return Judgement(Decision.PASS, estimate, bound, statistic, reason, arms, limit)
        significance = f"p={p:.2g} >= {self.alpha:g}" if p >= self.alpha else f"{_points(observed)} within tolerance"
        reason = f"{significance}, difference up to {_points(bound.upper)} > {tolerance} tolerance"
        return Judgement(Decision.CONTINUE, estimate, bound, statistic, reason, arms, limit)


DEFAULT_LATENCY_TOLERANCE: Mapping[float, float] = {0.5: 0.05, 0.95: 0.10, 0.99: 0.20}
"""Relative tolerance per quantile for `LatencyComparison`, from bench/sequential_sim.py (demo-like service,
40 requests/s per arm, median ~17 ms, p99 ~36 ms, with the 1 ms absolute tolerance and
DEFAULT_RANK_TOLERANCE): a healthy candidate passes in a median ~48 s (~1,900 requests per arm, ~59 s
without the rank tolerance), a +30% slowdown fails in ~18 s, and a p99-only +60% regression fails in ~90 s
(98.6% within 180 s). The median's sequence is narrow, so 5% costs little; the p99's
is the widest (its ranks bracket ~98.3-99.6% at 5,000 requests), so it needs 20% to pass within a few thousand
requests; with 50% a +60% p99 regression (36 -> 58 ms) is under 1.5 x 36 + 1 ms even with exact quantiles."""

DEFAULT_LATENCY_TOLERANCE_ABS_S = 0.001
"""Absolute latency tolerance added to each quantile's: 1 ms of timer and scheduling noise. 5 ms would be a
30% tolerance on the demo's 17 ms median, and a +30% slowdown would then pass."""

DEFAULT_RANK_TOLERANCE: Mapping[float, float] = {0.5: 0.0, 0.95: 0.01, 0.99: 0.005}
"""How far up the baseline's distribution a pass may look, per quantile: a pass at p99 shows the candidate's
p99 within tolerance of the baseline's p99.5. A tail quantile's confidence sequence is wide (at 5,000
requests the p99 bound spans roughly p98.6 to p99.4), and on a shared machine the tail is steep there, so
comparing p99 with p99 alone would need tens of thousands of requests to pass two equal versions. The
failing side compares like with like: a regression still fails at its own quantile."""


@dataclass(frozen=True)
class _QuantileMargins:
    q: float
    candidate: Interval
    baseline: Interval
    fail_margin: float   # candidate lower - allowed upper: > 0 is a regression beyond tolerance
    pass_margin: float   # candidate upper - allowed lower: <= 0 is evidence of no regression beyond it
    difference: float | None
    baseline_for_pass: Interval  # the baseline at q + rank tolerance
    pass_q: float


@dataclass(frozen=True)
class _Ranked:
    """One arm's values by rank: exact samples (one function), or histogram buckets (lower and upper edge)."""

    count: int
    lower_at: Callable[[int], float]
    upper_at: Callable[[int], float]

    def interval(self, q: float, alpha: float) -> Interval:
        return quantile_interval(self.count, self.lower_at, q, alpha=alpha, upper_value_at_rank=self.upper_at)


class LatencyComparison:
    """Candidate vs baseline per latency quantile, by the quantile confidence sequences of Howard & Ramdas
    (Bernoulli 2022) on each arm, the construction of Netflix's sequential canary (Lindon, Sanden, Shirikian,
    KDD 2022), with a union bound over arms and quantiles (alpha / (2 x quantiles) per sequence).

    FAIL when for some q the candidate's lower bound exceeds the baseline's upper bound x (1 + tol_q) +
    tolerance_abs_s; PASS when for every q the candidate's upper bound is within the baseline's lower bound
    x (1 + tol_q) + tolerance_abs_s; else CONTINUE. The worst quantile decides and is the one reported.
    """

    def __init__(self, *, quantiles: Sequence[float] = (0.5, 0.95, 0.99),
                 tolerance_ratio: Mapping[float, float] | float = DEFAULT_LATENCY_TOLERANCE,
                 tolerance_abs_s: float = DEFAULT_LATENCY_TOLERANCE_ABS_S, alpha: float = 0.01,
                 rank_tolerance: Mapping[float, float] | None = None) -> None:
        _check_alpha(alpha)
        self.quantiles = tuple(quantiles)
        if isinstance(tolerance_ratio, Mapping):
            missing = [q for q in self.quantiles if q not in tolerance_ratio]
            if missing:
                raise ValueError(f"no tolerance for quantiles {missing}")
            self.tolerance_ratio = {q: float(tolerance_ratio[q]) for q in self.quantiles}
        else:
            self.tolerance_ratio = dict.fromkeys(self.quantiles, float(tolerance_ratio))
        self.tolerance_abs_s = tolerance_abs_s
        self.alpha = alpha
        ranks = DEFAULT_RANK_TOLERANCE if rank_tolerance is None else rank_tolerance
        self.rank_tolerance = {q: min(float(ranks.get(q, 0.0)), (1 - q) / 2) for q in self.quantiles}

    def look(self, cand_count: int, cand_value_at_rank: Callable[[int], float], base_count: int,
             base_value_at_rank: Callable[[int], float], *,
             cand_upper_at_rank: Callable[[int], float] | None = None,
             base_upper_at_rank: Callable[[int], float] | None = None) -> Judgement:
        """One look at both arms' order statistics. From histograms, `*_value_at_rank` give a bucket's lower
        edge and `*_upper_at_rank` its upper edge (see `quantile_interval`); from samples, one function."""
        each = self.alpha / (2 * len(self.quantiles))
        cand = _Ranked(cand_count, cand_value_at_rank, cand_upper_at_rank or cand_value_at_rank)
        base = _Ranked(base_count, base_value_at_rank, base_upper_at_rank or base_value_at_rank)
        margins = [self._margins(q, each, cand, base) for q in self.quantiles]
        worst_fail = max(margins, key=lambda m: m.fail_margin)
        worst_pass = max(margins, key=lambda m: m.pass_margin)
        if worst_fail.fail_margin > 0:
            judgement = self._judgement(Decision.FAIL, worst_fail, "lower", ">", "upper")
        elif worst_pass.pass_margin <= 0:
            judgement = self._judgement(Decision.PASS, worst_pass, "upper", "<=", "lower")
        else:
            judgement = self._judgement(Decision.CONTINUE, worst_pass, "upper", ">", "lower")
        # Every judged quantile's intervals, not only the deciding one's: a report draws them all.
        arms = tuple(ArmInterval(arm, m.q, interval) for m in margins
                     for arm, interval in (("candidate", m.candidate), ("baseline", m.baseline)))
        return replace(judgement, arms=arms)

    def _margins(self, q: float, alpha: float, cand: _Ranked, base: _Ranked) -> _QuantileMargins:
        candidate = cand.interval(q, alpha)
        baseline = base.interval(q, alpha)
        tolerance = 1.0 + self.tolerance_ratio[q]
        allowed_upper = baseline.upper * tolerance + self.tolerance_abs_s
        # The pass looks at the baseline's quantile q + rank tolerance (DEFAULT_RANK_TOLERANCE), by a sequence
        # of its own at the same alpha: a pass rests on the candidate's and these sequences, a fail on the
        # candidate's and the baseline's at q, so a false pass and a false fail each stay within alpha.
        shifted = q + self.rank_tolerance[q]
        baseline_for_pass = baseline if shifted == q else base.interval(shifted, alpha)
        allowed_lower = baseline_for_pass.lower * tolerance + self.tolerance_abs_s
        difference = None
        if cand.count and base.count:
            difference = (float(cand.upper_at(nearest_rank(q, cand.count)))
                          - float(base.upper_at(nearest_rank(q, base.count))))
        # inf - inf is nan: an unbounded baseline cannot show a regression.
        fail_margin = candidate.lower - allowed_upper if math.isfinite(allowed_upper) else -math.inf
        return _QuantileMargins(q, candidate, baseline, fail_margin, candidate.upper - allowed_lower, difference,
                                baseline_for_pass, shifted)

    def _judgement(self, decision: Decision, m: _QuantileMargins, side: str, relation: str,
                   other: str) -> Judgement:
        name = _quantile_name(m.q)
        cand_bound = m.candidate.lower if side == "lower" else m.candidate.upper
        base_bound = m.baseline_for_pass.lower if other == "lower" else m.baseline.upper
        base_name = f" {_quantile_name(m.pass_q)}" if other == "lower" and m.pass_q != m.q else ""
        reason = (f"{name}: candidate {side} bound {_seconds(cand_bound)} {relation} baseline{base_name} {other} "
                  f"bound {_seconds(base_bound)} x {1 + self.tolerance_ratio[m.q]:g} + "
                  f"{_seconds(self.tolerance_abs_s)}")
        bound = Interval(m.candidate.lower - m.baseline.upper, m.candidate.upper - m.baseline.lower)
        statistic = (f"{name} candidate [{_seconds(m.candidate.lower)}, {_seconds(m.candidate.upper)}], "
                     f"baseline [{_seconds(m.baseline.lower)}, {_seconds(m.baseline.upper)}]")
        return Judgement(decision, m.difference, bound, statistic, reason)
