"""Meters: small objects that say whether a task may start now, in the spirit of aiometer.

Each meter has three hooks: `wait_time(now, task)` (0 = may start now, a positive number =
try again in that many seconds, `inf` = wait until something finishes), `started(now, task)`
and `finished(now, task, outcome)`. A task starts only when every meter of its group says 0;
the scheduler composes lane + agent + provider meters per task (the global limit is the
worker pool itself). Calls wait for budget, never rejected for it.
"""

from __future__ import annotations

import math
from collections import deque

from fanout.engine.circuit import (  # re-exported: the outcomes are the meters' vocabulary
    CIRCUIT_FAILURES as CIRCUIT_FAILURES,
)
from fanout.engine.circuit import CIRCUIT_PROBE_BASE_S as CIRCUIT_PROBE_BASE_S
from fanout.engine.circuit import CIRCUIT_PROBE_CAP_S as CIRCUIT_PROBE_CAP_S
from fanout.engine.circuit import DOWN as DOWN
from fanout.engine.circuit import ERROR as ERROR
from fanout.engine.circuit import NEUTRAL as NEUTRAL
from fanout.engine.circuit import NOT_SENT as NOT_SENT
from fanout.engine.circuit import OK as OK
from fanout.engine.circuit import OVERLOADED as OVERLOADED
from fanout.engine.circuit import RATE_LIMITED as RATE_LIMITED
from fanout.engine.circuit import UNREACHABLE_PROBES as UNREACHABLE_PROBES
from fanout.engine.circuit import Circuit as Circuit
from fanout.engine.meters import DEFAULT_BURST_S as DEFAULT_BURST_S
from fanout.engine.meters import WHY_CIRCUIT as WHY_CIRCUIT
from fanout.engine.meters import WHY_RETRY_AFTER as WHY_RETRY_AFTER
from fanout.engine.meters import WHY_RPM as WHY_RPM
from fanout.engine.meters import WHY_SLOT as WHY_SLOT
from fanout.engine.meters import WHY_TPM as WHY_TPM
from fanout.engine.meters import ConcurrencyMeter as ConcurrencyMeter
from fanout.engine.meters import Gcra as Gcra
from fanout.engine.meters import Meter as Meter
from fanout.engine.meters import ProviderLimits as ProviderLimits
from fanout.engine.meters import header_hold, least, model_of, retuned, token_cost
from fanout.engine.shared import LEASE_S, SYNC_S
from fanout.tasks import Task

INF = math.inf

AIMD_DECREASE_FACTOR = 0.5
AIMD_COOLDOWN_S = 1.0  # one halving per second at most: a burst of 429s is one signal
#: the learned request rate (see `ProviderMeter`): successes are counted over this window...
RATE_WINDOW_S = 1.0
#: ...or, when it holds fewer, over the span of this many (fewer in all: nothing to learn)
RATE_MIN_SAMPLES = 8
#: after a 429, pace at this share of the rate the provider was admitting calls at
RATE_DECREASE_FACTOR = 0.9
#: then climb: each success adds this many calls/s back up to the rate last admitted...
RATE_INCREASE = 0.1
#: ...and only this many above it (+1 % a second), so 429s come seldom; the step grows by
#: this much each second since the last cut (up to `RATE_PROBE_MAX` times), so capacity that
#: another client freed is found within seconds
RATE_PROBE = 0.01
RATE_PROBE_GROWTH = 1.0
RATE_PROBE_MAX = 8.0
#: processes sharing an account leave this share of its budget unused (bursts add up)
SHARED_HEADROOM = 0.01
#: calls sent to a service's account before its first answer (its rate headers) tells more
FIRST_CALLS = 4
#: until a full window has been measured each success adds this many calls/s: while calls
#: succeed at the pace, it grows by e (2.7 times) each second
RATE_SLOW_START = 1.0
#: until a rate is learned, a 429 teaches one only amid others (of the last calls that ended):
#: a budget we are over rejects half or more; noise (10-15 % of calls) does not (1 in 10^5)
RATE_EDGE_SHARE = 0.5
RATE_EDGE_SEEN = 32
_EDGE_MASK = (1 << RATE_EDGE_SEEN) - 1
#: a pace climbs only while calls go out at this share of it (in slow start, the second)
RATE_USED = 0.8
RATE_USED_SLOW = 0.5
#: the least pace a first 429 starts at (calls/s), before anything was measured
RATE_START_MIN = 1.0
#: a cut this long after the first success measures the rate: it is shared with the account
RATE_MEASURED_S = 3.0
#: one cut per window at most (but in slow start): the count must catch up with the last cut
RATE_COOLDOWN_S = 1.0
#: a Retry-After that reopens within this many calls (at the admitted rate) marks a rate limit
RATE_EDGE_CALLS = 2.0
#: a 429 while the admitted rate is under this share of the last learned limit is noise: it
#: teaches no lower rate
RATE_NOISE_SHARE = 0.5
#: a long Retry-After pauses every call only when at least this share of the calls that
#: ended lately were 429s: a stray 429 amid successes holds back its own task alone
PAUSE_SHARE = 0.5


class ProviderMeter:
    """One provider+model(+key): RPM and TPM budgets, a concurrency cap, pauses asked by
    `Retry-After`, and when `adaptive`:

    - adaptive concurrency (AIMD: halve on 429/overload, add 1/limit on success);
    - a learned request rate. A 429 whose Retry-After reopens the provider within about one
      call (`RATE_EDGE_CALLS` at the rate it was admitting our calls) says that its request
      budget is spent, and the rate it was admitting our calls at is the best measure of that
      budget: our successes over the last `RATE_WINDOW_S`, or over the last
      `RATE_MIN_SAMPLES` when they are fewer. So then (once per `RATE_COOLDOWN_S`) the meter
      starts spacing calls evenly at `RATE_DECREASE_FACTOR` times that rate, climbs back
      quickly to it (`RATE_INCREASE` calls/s per success), then slowly above it
      (`RATE_PROBE`) until the next such 429. At the start of a run the first count covers
      less than a window, so until a full one is measured the climb is `RATE_SLOW_START`,
      until a call sent at the new pace is rejected (a cut then, whatever the cooldown).
      A cut never raises the pace: a window that still holds a first burst counts more
      than the provider admits, so the basis is the lower of that count and the pace.
      Until a rate is learned a 429 teaches only amid others (`_amid_429s`): noise does not.

    Only the 429s of calls sent after the last cut count (`pause` follows the `finished` of
    the call told to wait; the meter keeps each call's start). Without the learned rate each
    pause ends with all queued calls sent at once and nearly all rejected again; concurrency
    cannot do this job (one call at a time is over 20 calls/s when answers take 50 ms). A
    long Retry-After teaches no rate: the pauses would drag the measured rate down.
    """

    __slots__ = (
        "_adopted",
        "_asked",
        "_avg_tokens",
        "_ceiling",
        "_charged",
        "_conf_rpm",
        "_conf_tpm",
        "_cuts_seen",
        "_cuts_synced",
        "_first_ok",
        "_flat",
        "_hdr_rpm",
        "_hdr_tpm",
        "_held_at",
        "_holders",
        "_last_cut",
        "_last_decrease",
        "_limited_start",
        "_outcomes",
        "_pace_tat",
        "_recent",
        "_rej_n",
        "_rej_prev",
        "_starts",
        "_storm",
        "_sync_at",
        "_win_n",
        "_win_prev",
        "_win_start",
        "adaptive",
        "cap",
        "circuit",
        "decreases",
        "inflight",
        "key",
        "last_ok",
        "lease",
        "limit",
        "pace_rate",
        "paused_until",
        "rate_cuts",
        "rpm",
        "tpm",
    )

    def __init__(self, key: str, limits: ProviderLimits, *, default_cap: int) -> None:
        self.key = key
        self.cap = float(limits.concurrency or default_cap)
        self.limit = self.cap
        self.adaptive = limits.adaptive
        self.rpm = retuned(None, limits.rpm, 1, headroom=SHARED_HEADROOM)
        self.tpm = retuned(None, limits.tpm, 1, headroom=SHARED_HEADROOM, tokens=True)
        self.inflight = 0
        self.last_ok = -INF  # when a call last succeeded
        self.paused_until = 0.0
        self._last_decrease = -INF
        self.decreases = 0
        self.pace_rate: float | None = None  # learned calls/s; None until the first 429
        self._pace_tat = 0.0  # when the pacer lets the next call start
        self._last_cut = -INF
        self._ceiling = INF  # the admitted rate measured at the last cut (INF: unknown)
        self._first_ok = INF
        self._held_at = -INF  # when the pacer last held a call back
        self.rate_cuts = 0
        self._starts: dict[int, float] = {}  # id(task) -> start of its call, once pacing
        self._limited_start: float | None = None  # start of the call last told to wait
        # successes per RATE_WINDOW_S: a sliding-window counter (this window and the last),
        # and the times of the last few, for rates under RATE_MIN_SAMPLES per window
        self._recent: deque[float] = deque(maxlen=RATE_MIN_SAMPLES)
        self._win_start = 0.0
        self._win_n = 0
        self._win_prev = 0
        self._rej_n = 0  # 429s in this window and the last, beside the successes
        self._rej_prev = 0
        self._storm = False  # whether a budget was seen to reject most calls (`_amid_429s`)
        self._outcomes = 0  # the last `RATE_EDGE_SEEN` calls that ended, a bit set per 429
        self.circuit = Circuit()
        # the account's budgets: configured, stated by the provider's headers, and the
        # number of processes sharing them (see `observe`, `_sync`)
        self._conf_rpm, self._conf_tpm = limits.rpm, limits.tpm
        self._hdr_rpm: float | None = None
        self._hdr_tpm: float | None = None
        self._avg_tokens = 0.0  # tokens per call lately (reported usage)
        self._charged: dict[int, float] = {}  # id(task) -> tokens charged at its start
        self._holders = 1
        self._flat = False  # whether the provider was found to admit no burst (see `pause`)
        self.lease = None if limits.account is None else limits.account.lease(model_of(key))
        self._sync_at = -INF
        self._asked = -INF
        self._cuts_synced = 0
        self._cuts_seen = -1  # the account's cut count at the last sync (-1: none seen)
        self._adopted: float | None = None  # the share of the account's rate last taken

    def wait_time(self, now: float, task: Task) -> float:
        if self.lease is not None:
            self._asked = now
            if now >= self._sync_at:
                self._sync(now)
        if self.inflight >= int(self.limit):
            return INF
        if self.lease is not None and self.pace_rate is None and self.adaptive:
            if not self.circuit.answered:
                if self.inflight >= FIRST_CALLS:
                    return INF  # a service's account: learn its limits from a few answers first
            elif self.rpm is None and self.tpm is None and self._holders > 1 and not self.rate_cuts:
                # answered, with no budget stated or configured, and other processes on the
                # account: climb from a slow start rather than all send at once
                self._start_pacing(now, 0.0)
        w = self.paused_until - now
        if self.circuit.down_since is not None:
            w = max(w, self.circuit.wait_time(now))
        if self.pace_rate is not None and self._pace_tat > now:
            self._held_at = now
            if self._pace_tat - now > w:
                w = self._pace_tat - now
        if self.rpm is not None:
            w = max(w, self.rpm.wait_time(now))
        if self.tpm is not None:
            w = max(w, self.tpm.wait_time(now))
        return w if w > 0.0 else 0.0

    def why(self, now: float) -> str:
        """The limit `wait_time` waits longest for (a slot, when none is free)."""
        if self.inflight >= int(self.limit):
            return WHY_SLOT
        why, w = WHY_RETRY_AFTER, self.paused_until - now
        if self.circuit.down_since is not None and self.circuit.wait_time(now) > w:
            why, w = WHY_CIRCUIT, self.circuit.wait_time(now)
        if self.pace_rate is not None and self._pace_tat - now > w:
            why, w = WHY_RPM, self._pace_tat - now
        if self.rpm is not None and self.rpm.wait_time(now) > w:
            why, w = WHY_RPM, self.rpm.wait_time(now)
        if self.tpm is not None and self.tpm.wait_time(now) > w:
            why = WHY_TPM
        return why

    def started(self, now: float, task: Task) -> None:
        if self.lease is not None and now >= self._sync_at:
            self._sync(now)
        self.inflight += 1
        if self.circuit.down_since is not None:
            self.circuit.started(task)
        if self.pace_rate is not None:  # (before the first cut, every 429 is news)
            self._starts[id(task)] = now
            self._pace_tat = max(self._pace_tat, now) + 1.0 / self.pace_rate
        if self.rpm is not None:
            self.rpm.charge(now, 1.0)
        if self.tpm is not None:
            self._charged[id(task)] = cost = token_cost(task.est_tokens, self._avg_tokens)
            self.tpm.charge(now, cost)

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None:
        self.inflight -= 1
        if self.lease is not None and now >= self._sync_at:
            self._sync(now)
        charged = self._charged.pop(id(task), 0.0) if self._charged else 0.0
        if outcome == NOT_SENT:  # give back what `started` charged for a call never sent
            if self.rpm is not None:
                self.rpm.refund(1.0)
            if self.tpm is not None:
                self.tpm.refund(charged)
            if self.pace_rate is not None and self._starts.pop(id(task), None) is not None:
                self._pace_tat -= 1.0 / self.pace_rate
            return
        if outcome == OK:
            self.last_ok = now
        if tokens > 0:
            avg = self._avg_tokens
            self._avg_tokens = float(tokens) if avg == 0.0 else avg + 0.1 * (tokens - avg)
            if self.tpm is not None:  # the usage reported replaces the charge
                self.tpm.refund(charged - tokens)
        if not self.adaptive:
            return
        # a call sent before the pacer existed was sent before its first cut
        started = self._starts.pop(id(task), -INF) if self._starts else -INF
        if outcome == OK:
            if now - self._win_start >= RATE_WINDOW_S:
                self._roll(now)
            self._win_n += 1
            self._outcomes = (self._outcomes << 1) & _EDGE_MASK
            self._recent.append(now)
            if now < self._first_ok:  # (paced or not: a pace taken from the account is)
                self._first_ok = now
            if self.pace_rate is not None:
                if self._ceiling == INF:
                    self._slow_start(now)
                elif not self._pace_used(now, RATE_USED):
                    pass  # the pace is not what holds calls back: its success says nothing
                elif self.pace_rate < self._ceiling:
                    self.pace_rate += RATE_INCREASE
                else:  # probe: a step that grows while no 429 says we are over
                    grow = min(RATE_PROBE_MAX, 1.0 + RATE_PROBE_GROWTH * (now - self._last_cut))
                    self.pace_rate += RATE_PROBE * grow  # (the account sums the steps)
            if self.limit < self.cap:
                self.limit = min(self.cap, self.limit + 1.0 / self.limit)
        elif outcome == RATE_LIMITED:  # acts through `pause`, with the call's start
            self._limited_start = started
            if now - self._win_start >= RATE_WINDOW_S:
                self._roll(now)
            self._rej_n += 1
            self._outcomes = ((self._outcomes << 1) | 1) & _EDGE_MASK
        elif outcome == OVERLOADED and now - self._last_decrease >= AIMD_COOLDOWN_S:
            self.limit = max(1.0, self.limit * AIMD_DECREASE_FACTOR)
            self._last_decrease = now
            self.decreases += 1

    def admitted_rate(self, now: float) -> float | None:
        """Calls/s the provider admitted lately (our successes): over the last
        `RATE_WINDOW_S` when it holds at least `RATE_MIN_SAMPLES`, else over the span of the
        last `RATE_MIN_SAMPLES`; None when there have not been that many."""
        if now - self._win_start >= RATE_WINDOW_S:
            self._roll(now)
        share = 1.0 - (now - self._win_start) / RATE_WINDOW_S
        count = self._win_prev * share + self._win_n
        if count >= RATE_MIN_SAMPLES:
            return count / RATE_WINDOW_S
        recent = self._recent
        if len(recent) < RATE_MIN_SAMPLES:
            return None
        return (len(recent) - 1) / max(now - recent[0], RATE_WINDOW_S)

    def _roll(self, now: float) -> None:
        windows = math.floor((now - self._win_start) / RATE_WINDOW_S)
        self._win_prev = self._win_n if windows == 1 else 0
        self._win_n = 0
        self._rej_prev = self._rej_n if windows == 1 else 0
        self._rej_n = 0
        self._win_start += windows * RATE_WINDOW_S

    def rejected_share(self, now: float) -> float:
        """The share of 429s among the calls that ended over about the last window."""
        if now - self._win_start >= RATE_WINDOW_S:
            self._roll(now)
        share = 1.0 - (now - self._win_start) / RATE_WINDOW_S
        rejected = self._rej_prev * share + self._rej_n
        total = rejected + self._win_prev * share + self._win_n
        return rejected / total if total > 0 else 1.0

    def pause(self, now: float, seconds: float, *, rate_limited: bool = True) -> bool:
        """A call was told to wait `seconds` (Retry-After). Hold every call of this
        provider+model until then when that is what the provider means: an overload, a wait
        of about one call (a request budget that is spent: then learn its rate, see the
        class), or most recent calls rejected. A stray 429 amid successes (noise, as an
        overloaded provider sends) holds back its own task alone. True when paused."""
        started, self._limited_start = self._limited_start, None
        admitted = self.admitted_rate(now)
        edge = admitted is not None and seconds * admitted <= RATE_EDGE_CALLS
        if (
            rate_limited
            and not edge
            and admitted is not None
            and self.rejected_share(now) < PAUSE_SHARE
        ):
            return False
        self.paused_until = max(self.paused_until, now + seconds)
        # (processes sharing an account: a 429 at a guessed pace is its edge, noise or not)
        if self._ceiling == INF and self.rpm is None and not self._storm and self._holders == 1:
            if not self._amid_429s():
                return True  # no rate known, and most calls succeed: noise, or not yet the limit
            self._storm = True
        if (
            rate_limited
            and self.adaptive
            and admitted is None
            and self.pace_rate is None
            and self.rpm is None
            and self.tpm is None
        ):  # (with a budget known, the pace is its)
            self._start_pacing(now, seconds)
            return True
        if (
            rate_limited
            and self.adaptive
            and admitted is None
            and self.pace_rate is not None
            and (started or -INF) >= self._last_cut
            and now - self._last_cut >= RATE_COOLDOWN_S
        ):
            self._rough_cut(now)
            return True
        if not rate_limited or not edge or not self.adaptive:
            return True
        if started is not None and started < self._last_cut:
            return True  # sent before the last cut: it says nothing about the pace since
        assert admitted is not None
        if not self._flat and self.rpm is not None:
            # paced at a budget stated or configured, its edge was met: the provider admits
            # no burst on top (a sliding window). Drop ours rather than learn a rate 10 % lower
            self._flat = True
            self._retune()
            return True
        known = self._ceiling
        if known == INF and self.rpm is not None:  # the budgets stated or configured, calls/s
            per_call = self.tpm.interval * max(self._avg_tokens, 1.0) if self.tpm else 0.0
            known = 1.0 / max(self.rpm.interval, per_call)
        if known != INF and admitted < RATE_NOISE_SHARE * known:
            return True  # far below the rate last admitted or stated: noise, not the limit
        pace = self.pace_rate
        slow_start = pace is not None and self._ceiling == INF
        if now - self._last_cut < RATE_COOLDOWN_S and not slow_start:
            return True  # one cut per window: the window has not caught up with the last one
        # what was admitted, or the pace, if lower (a first burst in the window counts)
        basis = admitted if pace is None else min(admitted, pace)
        self.pace_rate = RATE_DECREASE_FACTOR * basis
        # a window begun before our first success counts too few: slow start goes on
        full = now - self._first_ok >= RATE_WINDOW_S
        self._ceiling = basis if full or slow_start else INF
        self._cut(now)
        return True

    def _cut(self, now: float) -> None:
        self._last_cut = now
        self.rate_cuts += 1
        self._sync_at = now  # processes sharing the account follow the cut at once

    def _amid_429s(self) -> bool:
        """Whether half the calls that ended lately were 429s (`RATE_EDGE_SHARE`): before a rate
        is learned, the only sign that a 429 is a budget's edge, not noise. (The rate a guessed
        pace admits is that pace, whatever the budget; nor is a short Retry-After a sign.)"""
        return self._outcomes.bit_count() >= RATE_EDGE_SHARE * RATE_EDGE_SEEN

    def _slow_start(self, now: float) -> None:
        """A success while the pace is a guess: grow it, or drop it when it held no call back
        for a window (the provider admitted all there was to send: no limit of theirs)."""
        assert self.pace_rate is not None
        if now - self._held_at >= RATE_WINDOW_S and now - self._last_cut >= RATE_WINDOW_S:
            self.pace_rate = None
            self._starts.clear()
            self._last_cut = -INF
            self._storm = False
            self._outcomes = 0  # the storm that started it is a window old at least
            return
        if self._pace_used(now, RATE_USED_SLOW):
            self.pace_rate += RATE_SLOW_START

    def _pace_used(self, now: float, share: float) -> bool:
        """Whether calls go out at `share` of the pace at least (or too few ended to say): a
        pace nobody sends at (short of CPU, or of work) must not climb on."""
        admitted = self.admitted_rate(now)
        return admitted is None or self.pace_rate is None or admitted >= share * self.pace_rate

    def _start_pacing(self, now: float, seconds: float) -> None:
        """A 429 before the rate could be measured (the first calls met a budget smaller
        than their burst): pace at once, at the calls in flight per window, this process's
        share; slow start grows it until a call sent at it is rejected. Unpaced, each pause
        ended with every queued call sent and rejected again (up to 93 % 429s)."""
        rate = max(RATE_START_MIN, (self.inflight + 1) / RATE_WINDOW_S)
        self.pace_rate = rate / self._holders
        self._pace_tat = max(self._pace_tat, now + seconds)
        self._ceiling = INF
        self._cut(now)

    def _rough_cut(self, now: float) -> None:
        """A call sent at the pace was rejected before `RATE_MIN_SAMPLES` answers could
        measure the rate (a process's share of an account can be a few calls a second): pace
        at the rate the few successes came, if lower, and go on in slow start."""
        assert self.pace_rate is not None
        recent = self._recent
        rough = self.pace_rate / 2.0
        if len(recent) >= 2:
            rough = (len(recent) - 1) / max(now - recent[0], RATE_WINDOW_S)
        basis = min(self.pace_rate, rough)
        self.pace_rate = max(RATE_START_MIN / self._holders, RATE_DECREASE_FACTOR * basis)
        self._ceiling = INF
        self._cut(now)

    def observe(self, now: float, rate: dict[str, float], retry_after: float | None = None) -> None:
        """What the provider's rate headers said with an answer (`providers.sdk.rate_headers`):
        its per-minute limits seed the budgets (the lower of them and what is configured, as
        a share of the account when other processes use it). A budget with less than one
        call's worth left holds new calls for a while (`meters.header_hold`)."""
        hdr_rpm, hdr_tpm = rate.get("requests_limit"), rate.get("tokens_limit")
        if (hdr_rpm or None, hdr_tpm or None) != (self._hdr_rpm, self._hdr_tpm):
            self._hdr_rpm, self._hdr_tpm = hdr_rpm or None, hdr_tpm or None
            self._retune()
        hold = header_hold(rate, self._avg_tokens, retry_after)
        if hold > 0.0:
            self.paused_until = max(self.paused_until, now + hold)

    def _retune(self) -> None:
        """The RPM/TPM budgets anew (`meters.retuned`): configured, stated, shared."""
        n, flat = self._holders, self._flat
        rpm, tpm = least(self._conf_rpm, self._hdr_rpm), least(self._conf_tpm, self._hdr_tpm)
        self.rpm = retuned(self.rpm, rpm, n, headroom=SHARED_HEADROOM, flat=flat)
        self.tpm = retuned(self.tpm, tpm, n, headroom=SHARED_HEADROOM, tokens=True)

    def _sync(self, now: float) -> None:
        """Renew the lease and take this process's share of the account's budgets and of
        its learned rate: one figure all holders follow, set by each one's cut, raised by
        each one's climb, so they learn one rate and split it evenly (each on its own, the
        first to start kept up to three times its share). At most once per `SYNC_S`."""
        lease = self.lease
        assert lease is not None
        self._sync_at = now + SYNC_S
        n = self._holders
        shared = n > 1 and self.adaptive
        learned = ceiling = grow = None
        cut = self.rate_cuts != self._cuts_synced
        pace = self.pace_rate
        if pace and (shared or self._measured()):
            # (alone, a pace in slow start is a guess, not the account's rate: not recorded)
            if cut or not shared:
                learned = pace * n
                # (a cut among a first burst measures no ceiling: slow start goes on)
                ceiling = (
                    None if self._ceiling == INF or not self._measured() else self._ceiling * n
                )
            else:
                grow = 0.0 if self._adopted is None else pace - self._adopted
        if cut:
            self._cuts_synced = self.rate_cuts
        # calls waiting need budget: "lately" is two intervals at a known share, else a lease
        lately = LEASE_S if self.rpm is None else min(2 * self.rpm.interval + SYNC_S, LEASE_S)
        demand = now - self._asked < lately
        share = lease.sync(
            demand=demand,
            admitted=self.admitted_rate(now) if self.adaptive else None,
            seen=self._cuts_seen,
            learned=learned,
            ceiling=ceiling,
            grow=grow,
            cut=cut and learned is not None,
            seed=None if pace is None else pace * n,
        )
        if share is None:
            return
        holders = max(1, share.holders)
        seen, self._cuts_seen = self._cuts_seen, share.cuts
        if holders == n and self.pace_rate is not None and not shared:
            return
        more = holders > n
        if self.pace_rate is not None and not share.pace_total:  # a guess: rescale it
            self.pace_rate *= n / holders
        self._holders = holders
        self._retune()
        if more:  # a newcomer's burst would add to the credit banked here: drop it
            for gcra in (self.rpm, self.tpm):
                if gcra is not None:
                    gcra.tat = max(gcra.tat, now + gcra.tau)
        if self.adaptive and share.pace_total:
            self.pace_rate = self._adopted = share.pace_total / holders
            ceil = share.ceiling_total
            self._ceiling = INF if ceil is None else ceil / holders
            self._pace_tat = min(self._pace_tat, now + 1.0 / self.pace_rate)
            if seen != share.cuts and learned is None:  # another process cut the rate
                self._last_cut = now
        else:
            self._adopted = None

    def close(self) -> None:
        """Its engine closed: give the account's share back now, not at the process's exit
        (in a long-lived process the next engine would pace as if the account were shared)."""
        if self.lease is not None:
            self.lease.release()

    def _measured(self) -> bool:
        """Whether the last cut measured the rate: out of slow start, and late enough that
        the count holds no first burst (once measured as three times the account's)."""
        return self._ceiling != INF and self._last_cut - self._first_ok >= RATE_MEASURED_S

    def __repr__(self) -> str:
        pace = "" if self.pace_rate is None else f", pace={self.pace_rate:.2f}/s"
        return (
            f"ProviderMeter({self.key!r}, limit={self.limit:.1f}/{self.cap:.0f}, "
            f"inflight={self.inflight}{pace})"
        )
