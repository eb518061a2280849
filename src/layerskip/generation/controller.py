"""The online exit-layer controller: which exit layer E, draft length k and draft head a batch's
next round uses, or whether it decodes autoregressively, chosen from what decoding observes.

Switching between rounds is lossless by construction: at a round boundary every committed
position has its KV in every layer, and the exit-query cache is rewritten by each round's drafts,
so a new E (or k, or head) starts from the same state a fixed one would. Only speed changes.

What it observes, at a bounded cost:
  * the acceptance of its own drafts at the current E (every speculative round);
  * shadow exits: on a probe round the layer states at a few other layers are put through the
    final norm and the reduced draft head (one matmul for all of them), and its argmax compared
    with the full model's token. That counts the reduced head's agreement directly (its misses on
    tokens outside its vocabulary included); the full head's is taken where the token is inside
    that vocabulary (a full-head product per probed layer would cost a decode step per few
    layers). Autoregressive rounds split the decode step at the probed layers; speculative rounds
    split the verification (layers above E) and compare at each row's first position (its
    pending token, always committed: one row per probed layer in the product), and now and then
    one round decodes autoregressively to probe the layers below E. The counts ride along in the
    round's one host sync. Before the first decision every layer needs evidence of its own (a
    warm-up): a joining prompt's prefill shadows every layer at its last positions (their targets
    are the full model's own predictions there), and where that is not enough the first rounds
    decode autoregressively shadowing every layer; a speculative round after one whose first
    drafts all failed shadows every layer above E, so that a lucky E is left at once for the
    layer that agrees, not one layer per failed round.
Per-layer agreement is fitted nondecreasing in depth (pooling adjacent violators and equal
neighbours), which lets a few samples per layer suffice; counts are capped, so old context fades.
A layer is a candidate only with MIN_TRIALS observations of its own: pooled into a run of
agreeing deeper layers, one lucky sample would otherwise borrow their confidence.

What it decides: for every E, k and head the cost model (costs.py) gives the round's time, and
agreement p gives the expected tokens per round, sum_{i<=k} p^i; the best tokens/s wins, against
autoregressive decoding, and only by a margin over the current choice (no thrashing; a smaller one
where only k changes, which moves nothing: laid out for verifications, a layer's k+1 rows
cost less than in the one-row layout, so after a move a longer draft often pays). The cost
model's times are scaled by what rounds really take (measured wall time over predicted, the
median of the latest rounds of each kind): per-call overheads the model does not see, and a
machine's load, are in the comparison. Only the speculative factor relative to the autoregressive
one changes a decision, and on a shared machine single rounds vary by a third, so that relative
factor is shrunk towards 1 by PRIOR_ROUNDS pseudo-rounds: a few slow rounds cannot rule
speculation out for the rest of a generation, a systematic overhead still shows.

Where a layer's fastest layout for a verification's k+1 rows is not its fastest for one row
(float32 at batch 1 on an AVX2 CPU, packing.py), it also decides where the layers are laid out for
verifications from (`layout`): moving them to the current E pays when the rest of the generation,
at that E's best k and head in each layout, saves more than the move costs (both measured once,
costs.py); a fallback to autoregressive decoding moves them back on the same terms.

A start setting (`layerskip tune`'s, or the checkpoint's recommended E) is laid out for before
decoding, as a fixed setting is. A model's next generation carries over the layers' layout and
the probing interval (`carried_over`); its evidence and round times start afresh with its
prompt. As the layout outlives a generation, a move is judged over the generation's remaining
tokens plus as many as the previous one decoded.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from layerskip.generation.costs import LayerCosts, expected_tokens_per_round

PROBES = 8  # layers shadowed per autoregressive probe round (a speculative one: half as many)
WARMUP = 8  # observations of every layer before the first decision, when starting without a setting
PROMPT_POSITIONS = WARMUP  # a joining prompt's last positions shadowed at every layer
PROBE_EVERY = 8  # a probe round every this many rounds afterwards; while autoregressive decoding
MAX_PROBE_EVERY = 64  # keeps winning, the interval doubles up to this
BELOW_EVERY = 32  # while speculating: an autoregressive probe of the layers below E this often
MARGIN = 0.05  # a new choice must be expected this much faster than the current one
K_MARGIN = 0.01  # ... where only k changes: nothing moves, and the next round can change it back
MIN_TRIALS = 4  # a candidate layer needs this many observations of its own
WINDOW = 64  # observations kept per layer (older ones are scaled down)
RECENT_ROUNDS = 16  # measured/predicted time factors: the median of this many latest rounds per kind
PRIOR_ROUNDS = 4  # weight, in rounds, of "speculative rounds are as predicted as autoregressive ones"


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

    def __init__(self, costs: LayerCosts, max_k: int, start: Choice | None, heads: tuple[bool, ...]):
        self.costs, self.n_layers, self.max_k = costs, costs.n_layers, max_k
        # The draft heads it may choose (False full, True reduced); shadows use the last, the cheapest.
        self.heads = heads
        self.choice = start if start is not None else AUTOREGRESSIVE
        # Per head and exit layer 1..L-1 (index 0 unused): drafts that agreed, drafts observed.
        self.hits = {head: [0.0] * self.n_layers for head in heads}
        self.trials = {head: [0.0] * self.n_layers for head in heads}
        self.rounds = 0
        self.missed = False  # the last speculative round's first drafts were all rejected
        self.warming = start is None  # until every layer has WARMUP observations
        self.probed = 0  # probe rounds so far (they rotate through the layers)
        self.switches = 0
        self.interval, self.next_probe = PROBE_EVERY, PROBE_EVERY  # autoregressive re-probing
        # By "speculative": the latest rounds' measured over predicted times.
        self.slowdown: dict[bool, deque[float]] = {kind: deque(maxlen=RECENT_ROUNDS) for kind in (False, True)}
        self.timed = True  # scale predicted times by measured ones (tests turn it off: no timing in them)
        # Layers from here on are laid out for verifications (costs.py). A start setting (tune's,
        # or the checkpoint's) is laid out for as a fixed one is, where the caches are set up
        # (batch.py): not by a move inside the generation, judged on no evidence yet.
        speculative_start = start is not None and start.speculative and costs.verify_layer_s is not None
        self.laid_from: int | None = start.exit_layer if speculative_start else None
        self.decoded = 0.0  # tokens per row this controller's rounds committed
        self.after = 0.0  # tokens expected after this generation (its predecessor's: a model that generated will again)
        self._tables: dict[tuple[int, int | None], dict[Choice, float]] = {}

    def carried_over(self, start: Choice | None) -> ExitController:
        """The next generation's controller, from `start` as a new one: it keeps the layers'
        layout and the probing interval, expects as many tokens after it as this one decoded,
        and gathers a new context's evidence and round times afresh, its prompt first. Carrying
        more misled (benchmarks/controller.py): on the mixed-context model a family-B
        generation's agreement kept the next family-A one at E=12 where E=8 is perfect, and
        carried time factors sent a perfect-16 generation back to autoregressive decoding for 26
        of its tokens."""
        new = ExitController(self.costs, self.max_k, start, self.heads)
        new.interval, new.after = self.interval, self.decoded
        new.timed, new.laid_from = self.timed, self.laid_from
        new._tables = self._tables  # same costs, same tables
        return new

    def plan(self) -> tuple[Choice, tuple[int, ...]]:
        """This round's choice and the layers it shadows (ascending; empty: none)."""
        c, r = self.choice, self.rounds
        if not c.speculative:
            if self.warming:
                return c, tuple(range(1, self.n_layers))
            if r < self.next_probe:
                return c, ()
            self.next_probe = r + self.interval  # backs off while autoregressive keeps winning
            self.interval = min(2 * self.interval, MAX_PROBE_EVERY)
            return c, self._probe_set(1, self.n_layers, PROBES)
        if r % BELOW_EVERY == BELOW_EVERY - 1 and c.exit_layer > 1:
            return AUTOREGRESSIVE, self._probe_set(1, c.exit_layer, PROBES)
        if self.missed:
            return c, tuple(range(c.exit_layer + 1, self.n_layers))
        if r % PROBE_EVERY == 0:
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
        """`shadow`: the shadow head's agreements per probed layer, then the positions compared and
        how many of their targets that head's vocabulary holds (the full head's share of them);
        `accepted`: (accepted, drafted) per row of a speculative round; `seconds`: the round's wall
        time, host sync included."""
        self.rounds += 1
        self.decoded += sum(n + 1 for n, _ in accepted) / len(accepted) if ran.speculative and accepted else 1
        if self.timed and seconds is not None and seconds > 0:
            self._calibrate(ran, len(probes), batch, seconds)
        self._add_shadows(probes, shadow)
        if ran.speculative and accepted:
            # The first rejected draft ends a round: accepted / (accepted + rejections) per draft.
            # Where every row's first draft failed, the next round shadows every layer above E:
            # were E's evidence luck, theirs decides where to go.
            a = sum(n for n, _ in accepted)
            self.missed = a == 0
            self._add(ran.reduced, ran.exit_layer, a, a + sum(n < d for n, d in accepted))
        if (probes or ran.speculative) and not self.warming:
            self._decide(batch)

    def observe_prompt(self, probes: tuple[int, ...], shadow: list[int], batch: int) -> None:
        """Shadow exits of a joining prompt's prefill (`shadow` as in `observe`): evidence before
        any round, and where it completes the warm-up, the first decision (a start setting, or
        the current choice, is left to the rounds' evidence)."""
        warming = self.warming
        self._add_shadows(probes, shadow)
        if warming and not self.warming:
            self._decide(batch)

    def _add_shadows(self, probes: tuple[int, ...], shadow: list[int]) -> None:
        """Count shadow exits for every head (see `observe`); the warm-up ends once every layer
        has WARMUP observations."""
        if not probes:
            return
        *agree, compared, covered = shadow
        for layer, h in zip(probes, agree, strict=True):
            for head in self.heads:
                self._add(head, layer, h, compared if head else covered)
        if self.warming and min(self.trials[self.heads[-1]][1:], default=WARMUP) >= WARMUP:
            self.warming = False
            self.next_probe = self.rounds + PROBE_EVERY

    def _calibrate(self, ran: Choice, probes: int, batch: int, seconds: float) -> None:
        """Record the measured/predicted time of the kind of round that ran (a probe adds a call
        per probed layer and the shadow head over their states to the prediction)."""
        c = self.costs
        predicted = self._table(batch, self.laid_from)[ran]
        if probes:
            predicted += probes * c.call_s + c.draft_head_token_s(max(self.heads), probes * batch)
        self.slowdown[ran.speculative].append(min(max(seconds / predicted, 0.25), 8.0))

    def _factor(self, speculative: bool) -> float:
        """The time factor of a kind of round. Autoregressive: the median of its latest rounds (of
        the speculative ones before any ran; 1 before any round). Speculative: that times the
        shrunk ratio of the two kinds' medians."""
        ar, spec = self.slowdown[False], self.slowdown[True]
        base = statistics.median(ar or spec) if ar or spec else 1.0
        if not speculative or not (ar and spec):
            return base
        weight = len(spec) / (len(spec) + PRIOR_ROUNDS)
        return base * (statistics.median(spec) / statistics.median(ar)) ** weight

    def _add(self, head: bool, layer: int, hits: float, trials: float) -> None:
        h, t = self.hits[head], self.trials[head]
        h[layer], t[layer] = _capped(h[layer] + hits, t[layer] + trials, WINDOW)

    def agreement(self, reduced: bool) -> list[tuple[float, float] | None]:
        """Per exit layer: fitted agreement of a draft with the head `reduced` names, and its evidence."""
        return monotone_fit(self.hits[reduced], self.trials[reduced])

    def expected_rates(self, batch: int = 1) -> dict[Choice, float]:
        """Expected tokens per second (per row) of every choice with enough evidence, and of
        autoregressive decoding, with the layers where they are laid out now."""
        return self._rates(batch, self.laid_from)

    def _rates(self, batch: int, laid_from: int | None, layers: range | None = None) -> dict[Choice, float]:
        """`expected_rates` with the layers laid out from `laid_from`, for the exit layers in
        `layers` only (default: all)."""
        table, slow = self._table(batch, laid_from), self._factor(True)
        rates = {AUTOREGRESSIVE: 1.0 / (table[AUTOREGRESSIVE] * self._factor(False))}
        for reduced in self.heads:
            fit = self.agreement(reduced)
            for e in range(1, self.n_layers) if layers is None else layers:
                if fit[e] is None or (self.trials[reduced][e] < MIN_TRIALS and e != self.choice.exit_layer):
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
        same_layer = (best.exit_layer, best.reduced) == (self.choice.exit_layer, self.choice.reduced)
        if best != self.choice and rates[best] > current * (1 + (K_MARGIN if same_layer else MARGIN)):
            self.choice = best
            self.switches += 1
            self.interval, self.next_probe = PROBE_EVERY, self.rounds + PROBE_EVERY

    def _table(self, batch: int, laid_from: int | None = None) -> dict[Choice, float]:
        """Seconds per round of every choice (per decode step for autoregressive) at this batch size
        with the layers from `laid_from` on laid out for verifications."""
        key = batch, laid_from
        if key not in self._tables:
            c = self.costs
            table = {AUTOREGRESSIVE: c.autoregressive_s(batch, laid_from)}
            for reduced in self.heads:
                for e in range(1, self.n_layers):
                    for k in range(1, self.max_k + 1):
                        table[Choice(e, k, reduced)] = c.round_s(e, k, reduced, batch, laid_from)
            self._tables[key] = table
        return self._tables[key]

    def layout(self, tokens_left: int, batch: int) -> int | None:
        """Where the layers should be laid out for verifications from (None: nowhere) for the
        current exit layer, and the new state: moving costs.relayout_s per layer, which pays only
        if the tokens still to decode earn it back (only at batch 1 do the layouts differ). Those
        are the generation's `tokens_left` and, as the layout outlives it, as many as the model's
        previous generation decoded (`after`). Each layout is judged at its own best k and head for
        that layer: a longer draft that pays only once the layers are laid out (its k+1 rows)
        would otherwise never be tried."""
        target = self.choice.exit_layer
        if target == self.laid_from or self.costs.verify_layer_s is None or batch > 1 or self.warming:
            return self.laid_from  # nothing to move, or no choice settled yet

        layers = range(0) if target is None else range(target, target + 1)  # this E's k and heads only

        def rest(laid_from: int | None) -> float:
            rates = self._rates(batch, laid_from, layers)
            best = max((r for c, r in rates.items() if c.exit_layer == target), default=0.0)
            return (tokens_left + self.after) / best if best > 0 else math.inf  # inf: no evidence yet

        if rest(target) + self.costs.relayout_s_between(self.laid_from, target) < rest(self.laid_from):
            self.laid_from = target
        return self.laid_from


def _capped(hits: float, trials: float, window: float) -> tuple[float, float]:
    """Counts scaled down to at most `window` trials, so that recent observations dominate."""
    if trials <= window:
        return hits, trials
    return hits * window / trials, window
