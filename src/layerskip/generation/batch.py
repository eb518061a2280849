"""Batched generation: sequences with their own prompts, lengths and settings decode together.

Each row of the batch is one sequence at its own position. The KV cache and the exit-query cache
hold one row per sequence and attention masks read only a row's own valid slots, so rows of
different lengths share one static-shape step without padding or copying the cache. A row joins
by a prefill of its own cache row and leaves when its sink says stop; both happen between rounds,
which is what a continuously batching server needs. A free row still runs through the step (its
output is ignored), so the step's shape never changes.

Self-speculation runs in lockstep: every row drafts through layers 0..E-1 at once, one batched
verification runs layers E..L-1 over all rows' pending states, and acceptance is per row (greedy
acceptance vectorised, one host sync per round). A row allowed fewer drafts (it is near its
length limit, or its draft confidence fell) has the rest masked out rather than holding the
others back.

With no fixed exit layer (`--exit-layer auto`), the batch's controller (controller.py) chooses
each round's E, k and draft head, or autoregressive decoding, from acceptance and shadow exits it
observes on the way (a joining prompt's prefill is shadowed too); a round boundary holds no state
that depends on E, so switching is lossless. At batch 1 the controller may also have the layers
from E on laid out for verifications (packing.py), which changes speed only.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from layerskip.errors import LayerSkipError
from layerskip.generation import self_speculative
from layerskip.generation.clock import PhaseClock
from layerskip.generation.config import GenerationConfig
from layerskip.generation.controller import AUTOREGRESSIVE, PROMPT_POSITIONS, Choice, ExitController
from layerskip.generation.costs import LayerCosts, model_costs
from layerskip.generation.draft_vocab import DraftHead, configured_draft_head
from layerskip.generation.output import ACCEPTED, TARGET, GenerationResult, SpeculationStats, TokenCallback, TokenSink
from layerskip.generation.sampling import LogitAdjuster, make_generator, processed_probs, sample
from layerskip.generation.self_speculative import Draft, next_k
from layerskip.generation.steps import attention_span, prefill, prepare_for_decoding, probed_prefill, steps_for
from layerskip.model.llama import positions
from layerskip.model.loaded import LoadedModel
from layerskip.model.packing import lay_out_layers, lay_out_tied_head


@dataclass
class Row:
    """One sequence of the batch: its settings, where its tokens go, and its statistics."""

    cfg: GenerationConfig
    sink: TokenSink
    adjust: LogitAdjuster
    generator: torch.Generator | None
    prompt_tokens: int
    started: float
    k: int  # drafts allowed next round (adaptive k changes it)
    id: int  # the request's number in this decoder (slots are reused, ids are not)
    pos: int  # the pending token's position (the device holds it too; this copy bounds drafts)
    stats: SpeculationStats = field(default_factory=SpeculationStats)
    schedule: list[list] = field(default_factory=list)  # [(E, k, draft vocabulary), tokens] stretches, in order


@dataclass(frozen=True)
class BatchPlan:
    """What every row of one batch shares: the strategy, its layers and draft length, the draft head."""

    strategy: str
    exit_layer: int | None  # None: all layers (autoregressive), or chosen per round (auto)
    num_speculations: int  # k, or with `auto` the most the controller may choose
    draft_cfg: GenerationConfig  # the draft head's vocabulary settings
    auto: bool = False  # self-speculation whose E, k and draft head the controller chooses
    start: tuple[int | None, int] | None = None  # the controller's first (E, k); None: probe first

    @classmethod
    def of(cls, cfg: GenerationConfig, n_layers: int, recommended: int | None) -> BatchPlan:
        start = cfg.auto_start
        if cfg.auto_exit and start is None and recommended is not None:
            start = (recommended, cfg.num_speculations)
        if start is not None and start[0] is not None and not 1 <= start[0] < n_layers:
            raise LayerSkipError(f"the controller's start exit layer {start[0]} is outside 1..{n_layers - 1}")
        return cls(cfg.strategy, cfg.resolve_exit_layer(n_layers, recommended), cfg.num_speculations, cfg,
                   cfg.auto_exit, start if cfg.auto_exit else None)

    def admits(self, cfg: GenerationConfig) -> str | None:
        """Why a request cannot share this batch (None: it can)."""
        if cfg.strategy != self.strategy:
            return f"strategy {cfg.strategy!r} differs from the batch's {self.strategy!r}"
        if self.strategy == "autoregressive":
            return None
        d = self.draft_cfg
        if cfg.auto_exit != self.auto:
            return "this batch's exit layer is " + ("chosen online" if self.auto else f"fixed at {self.exit_layer}")
        if not self.auto and cfg.exit_layer not in (None, self.exit_layer):
            return f"exit layer {cfg.exit_layer} differs from the batch's {self.exit_layer}"
        if cfg.speculative and cfg.num_speculations > self.num_speculations:
            return f"num_speculations {cfg.num_speculations} exceeds the batch's {self.num_speculations}"
        if (cfg.draft_vocab_size, cfg.draft_vocab_file) != (d.draft_vocab_size, d.draft_vocab_file):
            return "the draft vocabulary differs from the batch's"
        return None


def model_eos_ids(loaded: LoadedModel) -> set[int]:
    ids = set(loaded.config.eos_token_ids)
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


class BatchDecoder:
    """Up to `capacity` sequences decoding together; `join` between rounds, `step` runs one round."""

    def __init__(self, loaded: LoadedModel, capacity: int, max_seq_len: int, plan: BatchPlan,
                 costs: LayerCosts | None = None, controller: ExitController | None = None):
        """`costs` (auto plans; default: measured once per model and machine, costs.model_costs) and
        `controller` (default: one from the plan and costs) are for tests and benchmarks."""
        model, mcfg = loaded.model, loaded.config
        if capacity < 1:
            raise LayerSkipError(f"batch capacity must be >= 1, got {capacity}")
        self.loaded, self.model, self.plan, self.capacity = loaded, model, plan, capacity
        self.max_seq_len = min(max_seq_len, mcfg.max_seq_len)
        self.device = model.tok_embeddings.weight.device
        speculative = plan.strategy == "self_speculative"
        self.heads = draft_heads(model, plan) if speculative else {}  # by "reduced vocabulary"
        self.controller = controller
        if plan.auto and controller is None:  # costs first: measuring them reallocates the caches
            costs = costs or model_costs(model, plan.num_speculations + 1, self.heads.get(True))
            self.controller = controller_for(plan, costs, self.heads, _LEARNED.get(model))
            _LEARNED[model] = self.controller
        self.static = AUTOREGRESSIVE  # what a round without a controller runs
        if speculative and not plan.auto:
            self.static = Choice(plan.exit_layer, plan.num_speculations, max(self.heads))
        self.steps = steps_for(model, loaded.compile)
        # Only one row's layers move (a batch's products have several rows everywhere: one
        # layout), and not under compiled steps (swapped modules would make them compile again).
        self.moves_layers = self.controller is not None and not self.steps.compiled and capacity == 1
        if self.controller is not None and not self.moves_layers:
            self.controller.laid_from = None
        laid_from = self.static.exit_layer if self.controller is None else self.controller.laid_from
        # What the tied head is laid out for: verifications, unless a controller starts autoregressively.
        self.head_speculative = self.controller is None or self.choice.speculative
        prepare_for_decoding(model, self.max_seq_len, plan.num_speculations + 1 if speculative else 0, capacity,
                             laid_from, self.head_speculative)
        self.rows: list[Row | None] = [None] * capacity
        with torch.inference_mode():  # like every later value of them, so compiled steps see one kind
            self.tokens = torch.zeros(capacity, dtype=torch.long, device=self.device)  # each row's pending token
            self.pos = torch.zeros(capacity, 1, dtype=torch.long, device=self.device)  # and its position
            self.live = torch.zeros(capacity, 1, dtype=torch.long, device=self.device)  # 1: a row is in use
        self.offsets = positions(0, plan.num_speculations + 1, self.device)
        self.clock = PhaseClock(self.device)
        self.finished: dict[int, GenerationResult] = {}  # by request id
        self.joined = 0
        self.segment = self._segment(self.choice)  # the stretch the next committed tokens belong to

    @property
    def active(self) -> list[int]:
        return [slot for slot, row in enumerate(self.rows) if row is not None]

    @property
    def free(self) -> int:
        return self.rows.count(None)

    @property
    def choice(self) -> Choice:
        """What the next round runs, unless the controller probes: E (None: autoregressive), k, head."""
        return self.controller.choice if self.controller is not None else self.static

    def _segment(self, c: Choice) -> tuple[int | None, int | None, int | None]:
        """A schedule stretch's key: (E, k, draft vocabulary size); (E, None, None) for early exit."""
        if self.plan.strategy == "early_exit":
            return self.plan.exit_layer, None, None
        if not c.speculative:
            return None, None, None
        ids = self.heads[c.reduced].ids
        return c.exit_layer, c.k, None if ids is None else len(ids)

    def room(self, prompt_tokens: int, cfg: GenerationConfig) -> str | None:
        """Why a request does not fit this batch's cache or plan (None: it fits)."""
        reason = self.plan.admits(cfg)
        if reason is not None:
            return reason
        if prompt_tokens + cfg.max_new_tokens + 1 > self.max_seq_len:
            return (f"prompt ({prompt_tokens} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                    f"batch's context of {self.max_seq_len} tokens")
        return None

    @torch.inference_mode()
    def join(self, prompt_ids: list[int], cfg: GenerationConfig, on_tokens: TokenCallback | None = None) -> int:
        """Prefill a free row with the prompt and commit its first token; return the request's id
        (its result appears under that id in `take_finished`)."""
        if not prompt_ids:
            raise LayerSkipError("prompt is empty")
        reason = self.room(len(prompt_ids), cfg)
        if reason is not None:
            raise LayerSkipError(reason)
        if not self.free:
            raise LayerSkipError("the batch is full")
        slot = self.rows.index(None)
        loaded, n = self.loaded, len(prompt_ids)
        eos = set() if cfg.ignore_eos else model_eos_ids(loaded) | set(cfg.eos_token_ids)
        adjust = LogitAdjuster(cfg, loaded.config.vocab_size, self.device)
        sink = TokenSink(loaded.tokenizer, cfg.max_new_tokens, eos, cfg.stop_strings, _counting(adjust, on_tokens))
        row = Row(cfg, sink, adjust, make_generator(cfg, self.device), n, time.perf_counter(), cfg.num_speculations,
                  self.joined, n)
        self.joined += 1
        rows = torch.tensor([[slot]], device=self.device)
        prompt = torch.tensor([prompt_ids], device=self.device)
        if self.controller is not None:
            logits = self._probed_prefill(prompt, rows)
        else:
            logits = prefill(self.model, prompt, positions(0, n, self.device), self._end_layer, rows)[0]
        token = self._choose(row, adjust(logits))
        self.rows[slot] = row
        self.tokens[slot] = token
        self.pos[slot] = n
        self.live[slot] = 1
        self._commit(slot, [int(token)])
        return row.id

    def _probed_prefill(self, prompt: Tensor, rows: Tensor) -> Tensor:
        """Prefill shadowing every layer at the prompt's last positions, the controller's first
        evidence (controller.py); the last position's logits [V]."""
        probes, n = tuple(range(1, self.model.n_layers)), prompt.shape[1]
        m = min(n, PROMPT_POSITIONS)
        logits, states = probed_prefill(self.model, prompt, positions(0, n, self.device), probes, m, rows)
        valid = torch.ones(1, m, dtype=torch.bool, device=self.device)
        shadow = self._shadow(states, logits.argmax(-1), valid).tolist()
        self.controller.observe_prompt(probes, shadow, len(self.active) + 1)
        self.segment = self._segment(self.choice)  # the first token counts to what decoding goes on with
        return logits[0, -1]

    def _choose(self, row: Row, logits: Tensor) -> Tensor:
        """The row's next token from its (adjusted) logits [V]."""
        if row.cfg.greedy:
            return logits.argmax(-1)
        return sample(processed_probs(logits, row.cfg), row.generator)

    def _commit(self, slot: int, ids: list[int], kind: str = TARGET) -> bool:
        """Push tokens to a row's sink; a finished row leaves the batch. True once it has."""
        row = self.rows[slot]
        before = len(row.sink.ids)
        done = row.sink.push(ids, kind)
        _extend(row.schedule, self.segment, len(row.sink.ids) - before)
        if done:
            self._finish(slot)
        return done

    def _finish(self, slot: int) -> None:
        row, end = self.rows[slot], time.perf_counter()
        first = row.sink.first_token_time or end
        schedule = [{"exit_layer": e, "num_speculations": k, "draft_vocab_size": v, "tokens": n}
                    for (e, k, v), n in row.schedule]
        main = _most_tokens(schedule)
        self.finished[row.id] = GenerationResult(
            text=row.sink.text(),
            token_ids=row.sink.ids,
            prompt_tokens=row.prompt_tokens,
            finish_reason=row.sink.finish_reason or "length",
            strategy=self.plan.strategy,
            exit_layer=main and main["exit_layer"],
            num_speculations=main and main["num_speculations"],
            time_to_first_token_s=first - row.started,
            decode_time_s=end - first,
            total_time_s=end - row.started,
            stats=row.stats,
            exit_layer_schedule=schedule,
        )
        self._free(slot)

    def _free(self, slot: int) -> None:
        """A free row keeps running through the steps; from position 0 its writes stay in bounds."""
        self.rows[slot] = None
        self.pos[slot] = 0
        self.live[slot] = 0

    @torch.inference_mode()
    def cancel(self, request_id: int) -> None:
        """Free a request's row now (its client went away); its result is dropped."""
        for slot, row in enumerate(self.rows):
            if row is not None and row.id == request_id:
                self._free(slot)
        self.finished.pop(request_id, None)

    def take_finished(self) -> dict[int, GenerationResult]:
        """Results of the requests that finished since the last call, by request id."""
        done, self.finished = self.finished, {}
        return done

    @torch.inference_mode()
    def step(self) -> None:
        """One round for every active row: one token each, or one draft/verify round each."""
        if not self.active:
            return
        if self.plan.strategy != "self_speculative":
            self._decode_round()
            return
        self._lay_out_layers()
        self._lay_out_head()
        batch, start = len(self.active), time.perf_counter()
        choice, probes = self.controller.plan() if self.controller is not None else (self.static, ())
        self.segment = self._segment(choice)
        accepted: list[tuple[int, int]] = []
        if choice.speculative:
            accepted, shadow = self._speculative_round(choice, probes)
        else:
            shadow = self._decode_round(probes)
        if self.controller is not None:  # the round's host sync is behind us: wall time is device time
            self.controller.observe(choice, probes, shadow, accepted, batch, time.perf_counter() - start)
        self.segment = self._segment(self.choice)

    def _lay_out_layers(self) -> None:
        """Lay the layers from E on out for verifications, or back for one row, where the
        controller says the rest of the generation earns the move back (controller.layout)."""
        if not self.moves_layers:
            return
        before = self.controller.laid_from
        left = min(self.rows[s].sink.remaining for s in self.active)
        laid_from = self.controller.layout(left, len(self.active))
        if laid_from != before:
            layers, split = self.model.layers, self.model.n_layers if laid_from is None else laid_from
            lay_out_layers(layers[:split], self.capacity)
            lay_out_layers(layers[split:], self.capacity * (self.plan.num_speculations + 1))

    def _lay_out_head(self) -> None:
        """A tied head's fastest layout depends on its rows (packing.py): one per row for
        autoregressive rounds, k+1 per row for verifications. Follow the settled choice (not a
        probe's one round), so the head is re-laid only when the controller changes mode."""
        speculative = self.choice.speculative
        if self.controller is None or speculative == self.head_speculative:
            return
        rows = self.capacity * (self.plan.num_speculations + 1 if speculative else 1)
        lay_out_tied_head(self.model, self.model.tok_embeddings.weight, rows)
        self.head_speculative = speculative

    @property
    def _end_layer(self) -> int | None:
        """Where decoding and prefill stop: E for early exit, else the last layer (verification
        takes self-speculation to the end)."""
        return self.plan.exit_layer if self.plan.strategy == "early_exit" else None

    def _decode_round(self, probes: tuple[int, ...] = ()) -> list[int]:
        """One token per row; with `probes`, the step is split there and the shadow exits' counts
        come back (controller.py)."""
        span = self._span(max(self.rows[s].pos for s in self.active) + 1)
        if probes:
            h = self.steps.early(self.model, self.tokens[:, None], self.pos, probes[0], span)
            logits, states = self._verify(h, self.pos, probes[0], probes, span)
            logits = logits[:, -1]
        else:
            logits = self.steps.decode(self.model, self.tokens[:, None], self.pos, self._end_layer, span)  # [C, V]
        tokens = logits.argmax(-1)
        shadow = self._shadow(states, tokens[:, None], self.live.bool()) if probes else tokens[:0]
        for slot in self.active:
            row = self.rows[slot]
            if row.adjust.active or not row.cfg.greedy:
                tokens[slot] = self._choose(row, row.adjust(logits[slot]))
        ids = torch.cat([tokens, shadow]).tolist()  # the round's one host sync
        ids, shadow_counts = ids[: self.capacity], ids[self.capacity :]
        moving = self._moving()
        for slot in self.active:
            self.rows[slot].pos += 1
            self._commit(slot, [ids[slot]])
        self.tokens, self.pos = tokens, self.pos + moving
        return shadow_counts

    def _span(self, end: int) -> int | None:
        """The cache slots this round's steps attend over when they write positions below `end`
        (steps.py); None (the whole cache) for compiled steps."""
        return None if self.steps.compiled else attention_span(end, self.model.cache_len)

    def _verify(self, h: Tensor, pos: Tensor, start: int, probes: tuple[int, ...],
                span: int | None) -> tuple[Tensor, Tensor | None]:
        """Layers start..L-1 and the head over layer-`start` states h [C, T, D]: logits [C, T, V],
        and the states at the probed layers (>= start) [P, C, T, D] (None without probes)."""
        states, at = [], start
        for layer in probes:
            if layer > at:
                h = self.steps.layers(self.model, h, pos, at, layer, span)
                at = layer
            states.append(h)
        return self.steps.verify(self.model, h, pos, at, span), torch.stack(states) if states else None

    def _shadow(self, states: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """Shadow exits at the probed layers: per layer, how many of the `valid` positions [C, T]
        the cheapest draft head's argmax agrees with the full model's `target` [C, T]; then how
        many positions were compared and at how many the target is inside that head's vocabulary.
        [P + 2] on the device. (The full head over every probed layer would cost a head per layer:
        a warm-up round shadowing 29 layers of SmolLM2 would take three decode steps.)"""
        head = self.heads[max(self.heads)]  # the reduced head where there is one
        p, c, t, d = states.shape
        guess = head.to_vocab(head.logits(self.model, states.reshape(p * c * t, d)).argmax(-1)).view(p, c, t)
        agree = ((guess == target) & valid).sum((1, 2))
        covered = valid if head.ids is None else valid & torch.isin(target, head.ids)
        return torch.cat([agree, valid.sum()[None], covered.sum()[None]])

    def _moving(self) -> Tensor:
        """[C, 1] 1 for the rows active as the round starts, 0 for free ones: only those advance
        (a copy of the device mask, no host-to-device transfer)."""
        return self.live.clone()

    def _speculative_round(self, choice: Choice, probes: tuple[int, ...]) -> tuple[list[tuple[int, int]], list[int]]:
        """Draft and verify; (accepted, drafted) per active row, and the shadow exits' counts."""
        active, moving = self.active, self._moving()
        limits = {slot: min(self.rows[slot].k, choice.k, self.rows[slot].sink.remaining - 1) for slot in active}
        # Every row drafts as far as the longest; none may write past the end of the cache.
        furthest = max(self.rows[s].pos for s in active)
        m = min(max(limits.values()), self.max_seq_len - 1 - furthest)
        span = self._span(furthest + m + 1)
        t0 = self.clock.mark()
        drafts, probs, limit = self._draft(m, limits, choice, span)
        t1 = self.clock.mark()
        n = drafts.shape[1]
        h = self.model.exit_query_cache.read(n + 1)
        logits, states = self._verify(h, self.pos + self.offsets[:, : n + 1], choice.exit_layer, probes, span)
        n_acc, new = self._accept(drafts, probs, limit, logits)
        parts = [n_acc, new, drafts.flatten()]
        if probes:  # at the pending tokens' positions, always committed (controller.py)
            parts.append(self._shadow(states[:, :, :1], logits[:, :1].argmax(-1), self.live.bool()))
        host = torch.cat(parts).tolist()  # the round's one host sync
        seconds = (self.clock.seconds(t0, t1), self.clock.seconds(t1, self.clock.mark()))
        c = self.capacity
        accepted, chosen, drafted = host[:c], host[c : 2 * c], host[2 * c : 2 * c + c * n]
        for slot in active:
            self._commit_round(slot, accepted[slot], chosen[slot], drafted[slot * n : slot * n + limits[slot]],
                               seconds)
        self.pos = self.pos + (n_acc[:, None] + 1) * moving
        self.tokens = new
        return [(accepted[s], limits[s]) for s in active], host[2 * c + c * n :]

    def _draft(self, m: int, limits: dict[int, int], choice: Choice,
               span: int | None) -> tuple[Tensor, dict[int, Tensor], Tensor]:
        """Up to m drafts for every row: tokens [C, n], sampled rows' draft distributions, and each
        row's number of usable drafts [C] (its limit, or fewer where its confidence fell)."""
        model, steps, cache = self.model, self.steps, self.model.exit_query_cache
        head, exit_layer = self.heads[choice.reduced], choice.exit_layer
        limit = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        for slot, lim in limits.items():
            limit[slot] = limits[slot] = min(lim, m)
        thresholds = {s: self.rows[s].cfg.draft_confidence_threshold for s in limits}
        confident = {s for s, t in thresholds.items() if t is not None}
        token, tokens = self.tokens, []
        probs: dict[int, list[Tensor]] = {s: [] for s in limits if not self.rows[s].cfg.greedy}
        for i in range(m):
            h, logits = steps.draft(model, head, token[:, None], self.pos + i, exit_layer, span)
            cache.write(i, h)
            token = head.to_vocab(logits.argmax(-1))
            for slot, lim in limits.items():
                row = self.rows[slot]
                if i >= lim or not (row.adjust.active or not row.cfg.greedy or slot in confident):
                    continue  # past its limit a row's drafts are masked out: argmax will do
                lg = row.adjust(logits[slot], [t[slot] for t in tokens], head.ids)
                if row.cfg.greedy:
                    token[slot] = head.to_vocab(lg.argmax(-1))
                    top = lg.softmax(-1).max() if slot in confident else None
                else:
                    q = processed_probs(lg, row.cfg)
                    token[slot] = head.to_vocab(sample(q, row.generator))
                    probs[slot].append(head.full_probs(q, model.config.vocab_size))
                    top = q.max() if slot in confident else None
                if top is not None and float(top) < thresholds[slot]:
                    limit[slot] = min(int(limit[slot]), i + 1)
                    confident.discard(slot)  # its later drafts are masked out anyway
            tokens.append(token)
            if thresholds and all(t is not None for t in thresholds.values()) and not confident:
                break  # every row's confidence fell: verify now
        cache.write(len(tokens), steps.early(model, token[:, None], self.pos + len(tokens), exit_layer, span))
        drafts = torch.stack(tokens, 1) if tokens else self.tokens.new_empty(self.capacity, 0)
        return drafts, {s: torch.stack(p) for s, p in probs.items() if p}, limit

    def _accept(
        self, drafts: Tensor, probs: dict[int, Tensor], limit: Tensor, logits: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Accepted drafts [C] and the full model's next token [C] of every row, on the device."""
        n = drafts.shape[1]
        target = logits.argmax(-1)  # [C, n + 1]
        usable = torch.arange(n, device=self.device)[None] < limit[:, None]
        n_acc = ((drafts == target[:, :-1]) & usable).int().cumprod(1).sum(1)
        new = target.gather(1, n_acc[:, None].long())[:, 0]
        for slot in self.active:
            row = self.rows[slot]
            if row.cfg.greedy and not row.adjust.active:
                continue
            lim = int(limit[slot])
            row_logits = row.adjust.rows(logits[slot, : lim + 1], drafts[slot, :lim])
            d = Draft(drafts[slot, :lim], probs.get(slot, torch.empty(0))[:lim] if not row.cfg.greedy else None)
            if row.cfg.greedy:
                t = row_logits.argmax(-1)
                a = int((d.tokens == t[:-1]).int().cumprod(0).sum())
                n_acc[slot], new[slot] = a, t[a]
            else:
                n_acc[slot], new[slot] = self_speculative.accept_sampled(d, row_logits, row.cfg, row.generator)
        return n_acc, new

    def _commit_round(self, slot: int, n_acc: int, new: int, drafted: list[int], seconds: tuple[float, float]) -> None:
        row = self.rows[slot]
        row.pos += n_acc + 1
        s = row.stats
        s.draft_time_s += seconds[0]
        s.verify_time_s += seconds[1]
        s.num_drafted += len(drafted)
        s.num_accepted += n_acc
        s.num_verifications += 1
        if self._commit(slot, drafted[:n_acc], ACCEPTED):
            return
        row.sink.show_rejected(drafted[n_acc:])
        if self._commit(slot, [new]):
            return
        if row.cfg.adaptive_k:
            row.k = next_k(row.cfg.num_speculations, len(drafted), n_acc)


AUTO_DRAFT_VOCAB = 8192  # the reduced head the controller may draft with, beside the full one


def draft_heads(model: torch.nn.Module, plan: BatchPlan) -> dict[bool, DraftHead]:
    """The draft heads a batch may use, keyed by "reduced vocabulary": the configured one; with
    `auto` and none configured, the full head and, on a large vocabulary, one over the
    AUTO_DRAFT_VOCAB most frequent tokens (the controller chooses between them)."""
    cfg = plan.draft_cfg
    head = configured_draft_head(model, cfg)
    heads = {head.ids is not None: head}
    configured = cfg.draft_vocab_size is not None or cfg.draft_vocab_file is not None
    if plan.auto and not configured and model.config.vocab_size > 2 * AUTO_DRAFT_VOCAB:
        heads[True] = configured_draft_head(model, replace(cfg, draft_vocab_size=AUTO_DRAFT_VOCAB))
    return heads


# The latest auto controller of each model: the next generation's carries over what it learned.
_LEARNED: weakref.WeakKeyDictionary[torch.nn.Module, ExitController] = weakref.WeakKeyDictionary()


def forget(model: torch.nn.Module | None = None) -> None:
    """Drop what auto decoding learned on `model` (None: on every model): its next generation
    starts afresh (time factors, layout)."""
    if model is None:
        _LEARNED.clear()
    else:
        _LEARNED.pop(model, None)


def controller_for(plan: BatchPlan, costs: LayerCosts, heads: dict[bool, DraftHead],
                   learned: ExitController | None = None) -> ExitController:
    """The controller of an auto plan: it may draft with every head the plan has (the configured
    one, or the full and a reduced one) and starts at the plan's (E, k) with the full head where
    there is one. It carries over what `learned` (the model's previous controller) found out about
    the model on this machine where that one chose among the same heads, k and costs."""
    start = None
    if plan.start is not None:
        e, k = plan.start
        start = AUTOREGRESSIVE if e is None else Choice(e, min(k, plan.num_speculations), min(heads))
    if (learned is not None and learned.costs is costs and learned.max_k == plan.num_speculations
            and learned.heads == tuple(sorted(heads))):
        return learned.carried_over(start)
    return ExitController(costs, plan.num_speculations, start, tuple(sorted(heads)))


def _extend(schedule: list[list], segment: tuple, tokens: int) -> None:
    """Count tokens into the schedule's last stretch, or open a new one."""
    if tokens <= 0:
        return
    if schedule and schedule[-1][0] == segment:
        schedule[-1][1] += tokens
    else:
        schedule.append([segment, tokens])


def _most_tokens(schedule: list[dict]) -> dict | None:
    """The speculative (or early-exit) setting that produced most tokens; None if there is none."""
    per: dict[tuple, int] = {}
    for s in schedule:
        if s["exit_layer"] is not None:
            key = (s["exit_layer"], s["num_speculations"])
            per[key] = per.get(key, 0) + s["tokens"]
    if not per:
        return None
    e, k = max(per, key=per.get)
    return {"exit_layer": e, "num_speculations": k}


def _counting(adjust: LogitAdjuster, on_tokens: TokenCallback | None) -> TokenCallback | None:
    """`on_tokens` that also counts committed tokens for the penalties (when there are any)."""
    if not adjust.active:
        return on_tokens

    def count_then_forward(ids: list[int], kind: str) -> None:
        if kind != "rejected":
            adjust.commit(ids)
        if on_tokens is not None:
            on_tokens(ids, kind)

    return count_then_forward


def generate_batch_ids(
    loaded: LoadedModel, prompts: list[list[int]], cfgs: GenerationConfig | list[GenerationConfig]
) -> list[GenerationResult]:
    """Generate a continuation of every prompt (token ids) together; one result per prompt, in order.

    `cfgs`: one config for all, or one per prompt (lengths, stop strings, EOS and sampling may
    differ per row; the strategy, exit layer and draft head are the batch's).
    """
    if not prompts:
        return []
    cfgs = cfgs if isinstance(cfgs, list) else [cfgs] * len(prompts)
    if len(cfgs) != len(prompts):
        raise LayerSkipError(f"{len(prompts)} prompts but {len(cfgs)} generation configs")
    mcfg = loaded.config
    plan = BatchPlan.of(cfgs[0], mcfg.n_layers, mcfg.recommended_exit_layer)
    longest = max(len(p) + c.max_new_tokens for p, c in zip(prompts, cfgs, strict=True))
    decoder = BatchDecoder(loaded, len(prompts), longest + 1 + plan.num_speculations, plan)
    ids = [decoder.join(p, c) for p, c in zip(prompts, cfgs, strict=True)]
    results = decoder.take_finished()
    while decoder.active:
        decoder.step()
        results |= decoder.take_finished()
    return [results[i] for i in ids]
