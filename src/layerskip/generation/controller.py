"""The online exit-layer controller: which exit layer E, draft length k and draft head a batch's
next round uses, or whether it decodes autoregressively, chosen from what decoding observes.

Switching between rounds is lossless by construction: at a round boundary every committed
position has its KV in every layer, and the exit-query cache is rewritten by each round's drafts,
so a new E (or k, or head) starts from the same state a fixed one would. Only speed changes.

What it observes, at a bounded cost:
  * the acceptance of its own drafts at the current E (every speculative round);
  * shadow exits: on a probe round the layer states of the committed positions at a few other
    layers are put through the final norm and the reduced draft head (one matmul for all of them),
    and their argmax compared with the full model's. Autoregressive rounds split the decode step
    at the probed layers; speculative rounds split the verification (layers above E), and now and
    then one round decodes autoregressively to probe the layers below E. The counts ride along in
    the round's one host sync.
Per-layer agreement is fitted nondecreasing in depth (pooling adjacent violators and equal
neighbours), which lets a few samples per layer suffice; counts are capped, so old context fades.

What it decides: for every E, k and head the cost model (costs.py) gives the round's time, and
agreement p gives the expected tokens per round, sum_{i<=k} p^i; the best tokens/s wins, against
autoregressive decoding, and only by a margin over the current choice (no thrashing). The cost
model's times are scaled by what rounds really take (measured wall time over predicted, one factor
for autoregressive rounds and one for speculative ones): per-call overheads the model does not
see, and a machine's load, are in the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from layerskip.generation.costs import LayerCosts, expected_tokens_per_round

PROBES = 8  # layers shadowed per autoregressive probe round (a speculative one: half as many)
WARMUP = 4  # probe rounds in a row when starting without a setting: every layer once (L <= 33)
PROBE_EVERY = 8  # a probe round every this many rounds afterwards; while autoregressive decoding
MAX_PROBE_EVERY = 64  # keeps winning, the interval doubles up to this
BELOW_EVERY = 32  # while speculating: an autoregressive probe of the layers below E this often
MARGIN = 0.05  # a new choice must be expected this much faster than the current one
MIN_TRIALS = 4  # a layer's fitted agreement needs this many observations behind it
WINDOW = 64  # observations kept per layer (older ones are scaled down)
SMOOTHING = 0.3  # weight of the latest round in the measured/predicted time factors


@dataclass(frozen=True)
class Choice:
    """What a round runs: E (None: autoregressive), k drafts, and the reduced draft head or not."""

    exit_layer: int | None
    k: int = 0
    reduced: bool = False

    @property
    def speculative(self) -> bool:
        return self.exit_layer is not None


AUTOREGRESSIVE = Choice(None)


def monotone_fit(hits: list[float], trials: list[float]) -> list[tuple[float, float] | None]:
    """Per layer, (agreement, observations behind it) of the nondecreasing fit of hits/trials by
    pooling adjacent violators, and equal neighbours too (a run of layers that all agree pools
    its evidence); agreement is shrunk by one pseudo-miss. None: never observed."""
    blocks: list[list] = []  # [hits, trials, layers]
    for layer, (h, t) in enumerate(zip(hits, trials, strict=True)):
        if t <= 0:
            continue
        blocks.append([h, t, [layer]])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] >= blocks[-1][0] * blocks[-2][1]:
            h2, t2, layers = blocks.pop()
            blocks[-1][0] += h2
            blocks[-1][1] += t2
            blocks[-1][2] += layers
    out: list[tuple[float, float] | None] = [None] * len(hits)
    for h, t, layers in blocks:
        for layer in layers:
            out[layer] = (h / (t + 1), t)
    return out


class ExitController:
    """One batch's controller. `plan()` says what the next round runs and which layers it shadows;
    `observe()` takes what the round measured and may change the choice for the rounds after."""

    def __init__(self, costs: LayerCosts, max_k: int, start: Choice | None, heads: tuple[bool, ...],
                 shadow_reduced: bool):
        self.costs, self.n_layers, self.max_k = costs, costs.n_layers, max_k
        self.heads = heads  # draft heads it may choose: False full, True reduced
        self.shadow_reduced = shadow_reduced  # the shadow head is the reduced one (else the full)
        self.choice = start if start is not None else AUTOREGRESSIVE
        self.hits = [0.0] * self.n_layers  # per exit layer 1..L-1 (index 0 unused)
        self.trials = [0.0] * self.n_layers
        self.covered = self.targets = 0.0  # targets inside the reduced head's vocabulary
        self.rounds = 0
        self.warmup = 0 if start is not None else WARMUP
        self.probed = 0  # probe rounds so far (they rotate through the layers)
        self.switches = 0
        self.interval, self.next_probe = PROBE_EVERY, self.warmup + PROBE_EVERY  # autoregressive re-probing
        self.slowdown: dict[bool, float] = {}  # by "speculative": measured over predicted round time
        self.timed = True  # scale predicted times by measured ones (tests turn it off: no timing in them)
        self._tables: dict[int, dict[Choice, float]] = {}

    def plan(self) -> tuple[Choice, tuple[int, ...]]:
        """This round's choice and the layers it shadows (ascending; empty: none)."""
        c, r = self.choice, self.rounds
        if not c.speculative:
            if r < self.warmup:
                return c, self._probe_set(1, self.n_layers, PROBES)
            if r < self.next_probe:
                return c, ()
            self.next_probe = r + self.interval  # backs off while autoregressive keeps winning
            self.interval = min(2 * self.interval, MAX_PROBE_EVERY)
            return c, self._probe_set(1, self.n_layers, PROBES)
        if r % BELOW_EVERY == BELOW_EVERY - 1 and c.exit_layer > 1:
            return AUTOREGRESSIVE, self._probe_set(1, c.exit_layer, PROBES)
        if r < self.warmup or r % PROBE_EVERY == 0:
            return c, self._probe_set(c.exit_layer + 1, self.n_layers, PROBES // 2)
        return c, ()

    def _probe_set(self, lo: int, hi: int, most: int) -> tuple[int, ...]:
        """Up to `most` layers of lo..hi-1, evenly spaced, shifted by one each probe round."""
        n = hi - lo
        if n <= 0:
            return ()
        stride = max(1, math.ceil(n / most))
        self.probed += 1
        return tuple(range(lo + self.probed % stride, hi, stride))

    def observe(self, ran: Choice, probes: tuple[int, ...], shadow: list[int], accepted: list[tuple[int, int]],
                batch: int, seconds: float | None = None) -> None:
        """`shadow`: agreements per probed layer, then the positions compared and how many of their
        targets the reduced head covers; `accepted`: (accepted, drafted) per row of a speculative
        round; `seconds`: the round's wall time, host sync included."""
        self.rounds += 1
        if self.timed and seconds is not None and seconds > 0:
            self._calibrate(ran, len(probes), batch, seconds)
        if probes:
            *agree, compared, covered = shadow
            for layer, h in zip(probes, agree, strict=True):
                self._add(layer, h, compared)
            self.covered, self.targets = _capped(self.covered + covered, self.targets + compared, 4 * WINDOW)
        if ran.speculative and accepted:
            # The first rejected draft ends a round: accepted / (accepted + rejections) per draft.
            # In the shadow head's terms, a full-head draft agrees as often times the coverage.
            scale = 1.0 if ran.reduced == self.shadow_reduced else self.coverage
            a = sum(n for n, _ in accepted)
            self._add(ran.exit_layer, a * scale, a + sum(n < d for n, d in accepted))
        if (probes or ran.speculative) and self.rounds >= self.warmup:
            self._decide(batch)

    def _calibrate(self, ran: Choice, probes: int, batch: int, seconds: float) -> None:
        """Update the measured/predicted time factor of the kind of round that ran (a probe adds
        a call and a shadow head per probed layer to the prediction)."""
        c = self.costs
        predicted = self._table(batch)[ran] + probes * (c.call_s + c.draft_head_token_s(self.shadow_reduced, batch))
        ratio = min(max(seconds / predicted, 0.25), 8.0)
        old = self.slowdown.get(ran.speculative)
        self.slowdown[ran.speculative] = ratio if old is None else (1 - SMOOTHING) * old + SMOOTHING * ratio

    def _factor(self, speculative: bool) -> float:
        """The time factor of a kind of round; speculation not yet measured takes autoregressive's."""
        return self.slowdown.get(speculative, self.slowdown.get(False, 1.0))

    def _add(self, layer: int, hits: float, trials: float) -> None:
        self.hits[layer], self.trials[layer] = _capped(self.hits[layer] + hits, self.trials[layer] + trials, WINDOW)

    @property
    def coverage(self) -> float:
        """Share of the full model's tokens the reduced head can draft (1 without observations)."""
        return self.covered / self.targets if self.targets else 1.0

    def agreement(self, reduced: bool) -> list[tuple[float, float] | None]:
        """Per exit layer: fitted agreement of a draft with the head `reduced` names, and its evidence."""
        fit = monotone_fit(self.hits, self.trials)
        if reduced == self.shadow_reduced:
            return fit
        cov = max(self.coverage, 1e-6)  # full-head agreement from the reduced head's
        return [None if f is None else (min(1.0, f[0] / cov), f[1]) for f in fit]

    def expected_rates(self, batch: int = 1) -> dict[Choice, float]:
        """Expected tokens per second (per row) of every choice with enough evidence, and of
        autoregressive decoding."""
        table, slow = self._table(batch), self._factor(True)
        rates = {AUTOREGRESSIVE: 1.0 / (table[AUTOREGRESSIVE] * self._factor(False))}
        for reduced in self.heads:
            fit = self.agreement(reduced)
            for e in range(1, self.n_layers):
                if fit[e] is None or (fit[e][1] < MIN_TRIALS and e != self.choice.exit_layer):
                    continue
                for k in range(1, self.max_k + 1):
                    c = Choice(e, k, reduced)
                    rates[c] = expected_tokens_per_round(fit[e][0], k) / (table[c] * slow)
        return rates

    def _decide(self, batch: int) -> None:
        rates = self.expected_rates(batch)
        best = max(rates, key=rates.get)
        current = rates.get(self.choice)
        if current is None:  # the current choice has no evidence yet
            return
        if best != self.choice and rates[best] > current * (1 + MARGIN):
            self.choice = best
            self.switches += 1
            self.interval, self.next_probe = PROBE_EVERY, self.rounds + PROBE_EVERY

    def _table(self, batch: int) -> dict[Choice, float]:
        """Seconds per round of every choice (per decode step for autoregressive) at this batch size."""
        if batch not in self._tables:
            c = self.costs
            table = {AUTOREGRESSIVE: c.forward_s(self.n_layers, 1, batch=batch)}
            for reduced in self.heads:
                for e in range(1, self.n_layers):
                    for k in range(1, self.max_k + 1):
                        table[Choice(e, k, reduced)] = c.round_s(e, k, reduced, batch)
            self._tables[batch] = table
        return self._tables[batch]


def _capped(hits: float, trials: float, window: float) -> tuple[float, float]:
    """Counts scaled down to at most `window` trials, so that recent observations dominate."""
    if trials <= window:
        return hits, trials
    return hits * window / trials, window
