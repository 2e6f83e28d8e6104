"""Sampling without sorting the vocabulary: temperature, nucleus (top-p), one draw per row.

transformers' continuous-batching step samples in three stages: a temperature
processor, a top-p processor that **sorts every row of the vocabulary** and
scatters a mask back, then ``softmax`` + ``torch.multinomial``. On CPU both the
sort and ``multinomial`` (one exponential variate per vocabulary entry) are
slow: measured here for 32 rows of an 8192-token vocabulary, about 13 ms per
step, a third of the whole decode step; with a 128k vocabulary it dominates.

:func:`sample_tokens` draws the same distribution with passes that are linear
in the vocabulary and one uniform number per row (the approach of FlashInfer's
sorting-free top-p sampling):

1. ``probs = softmax(logits / temperature)``.
2. Draw a token ``t`` from the candidates by inverse CDF (``cumsum`` +
   ``searchsorted``).
3. ``t`` is in the nucleus iff the mass of the tokens strictly more probable
   than ``t`` is below ``top_p`` (the same rule as sorting ascending and
   dropping the tokens whose cumulative mass is <= 1 - top_p; tokens tied with
   the nucleus boundary are all kept). Accept it, or else every token no more
   probable than ``t`` is outside the nucleus too: drop them and draw again.

An accepted draw is distributed exactly as ``probs`` restricted to the nucleus
and renormalised. Rows that still have no token after :data:`MAX_ROUNDS`
draws (tiny ``top_p`` on a flat distribution) fall back to an exact sort.

:func:`install_fast_sampler` puts this sampler into a running
``ContinuousBatchingManager``: the scheduler, batching, cache and model forward
stay transformers' own; only the per-step sampling stage is replaced, and only
where that is safe (no CUDA graphs or compile, no log-probs, no processors
other than temperature and top-p). Otherwise the manager keeps its own.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ezrunner_server")

MAX_ROUNDS = 24


def _uniforms(rows, generator, row_generators):
    """One uniform number per active row; rows with their own generator (a request's
    seed) draw from it, so their tokens do not depend on the rest of the batch."""
    import torch

    u = torch.rand((rows.numel(), 1), device=rows.device, generator=generator)
    if row_generators:
        for k, r in enumerate(rows.tolist()):
            g = row_generators.get(r)
            if g is not None:
                u[k, 0] = torch.rand(1, generator=g).item()
    return u


def sample_tokens(logits, temperature=None, top_p=None, generator=None, row_generators=None):
    """One token per row of ``logits`` (``[N, V]``, any float dtype), with per-row
    ``temperature`` and ``top_p`` (``[N]`` float tensors, or None for 1.0).
    ``row_generators`` maps a row to its own ``torch.Generator``."""
    import torch

    logits = logits.float()
    if temperature is not None:
        logits = logits / temperature.to(logits.dtype).unsqueeze(-1)
    probs = torch.softmax(logits, dim=-1)
    n, vocab = probs.shape
    tokens = torch.empty(n, dtype=torch.long, device=probs.device)
    if n == 0:
        return tokens
    top_p = (torch.ones(n, device=probs.device) if top_p is None
             else top_p.to(device=probs.device, dtype=torch.float32))
    rows = torch.arange(n, device=probs.device)
    p, limit, floor = probs, top_p.unsqueeze(-1), None
    for _ in range(MAX_ROUNDS):
        candidates = p if floor is None else torch.where(p > floor, p, 0.0)
        cdf = candidates.cumsum(dim=-1)
        u = _uniforms(rows, generator, row_generators) * cdf[:, -1:]
        t = torch.searchsorted(cdf, u, right=True).clamp_(max=vocab - 1)
        pt = p.gather(1, t)
        above = torch.where(p > pt, p, 0.0).sum(dim=-1, keepdim=True)
        ok = ((above < limit) | (limit >= 1.0)).squeeze(-1)
        if bool(ok.all()):
            tokens[rows] = t.squeeze(-1)
            return tokens
        tokens[rows[ok]] = t[ok].squeeze(-1)
        keep = ~ok
        rows, p, limit = rows[keep], p[keep], limit[keep]
        pt = pt[keep]
        floor = pt if floor is None else torch.maximum(floor[keep], pt)
    tokens[rows] = _sorted_nucleus_draw(probs[rows], top_p[rows], generator, _uniforms(rows, generator, row_generators))
    return tokens


def _sorted_nucleus_draw(probs, top_p, generator, uniforms=None):
    import torch

    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(dim=-1)
    kept = torch.where((cum - sorted_p) < top_p.unsqueeze(-1), sorted_p, 0.0)
    kept[:, 0] = sorted_p[:, 0]  # the most probable token is always in the nucleus
    cdf = kept.cumsum(dim=-1)
    if uniforms is None:
        uniforms = torch.rand((probs.shape[0], 1), device=probs.device, generator=generator)
    u = uniforms * cdf[:, -1:]
    pos = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[1] - 1)
    return order.gather(1, pos).squeeze(-1)


def apply_penalties(logits_row, generated: list[int], presence: float, frequency: float) -> None:
    """OpenAI's presence and frequency penalties, in place on one row of logits:
    ``logit[t] -= frequency * count(t) + presence * (count(t) > 0)`` over the tokens
    generated so far (the prompt does not count)."""
    import torch

    if not generated or (presence == 0.0 and frequency == 0.0):
        return
    ids, counts = torch.unique(torch.tensor(generated, dtype=torch.long), return_counts=True)
    ids, counts = ids[ids < logits_row.shape[-1]], counts[ids < logits_row.shape[-1]]
    logits_row[ids] -= counts.to(logits_row.dtype) * frequency + presence


def seeded_generator(seed: int, position: int):
    """The generator for token ``position`` of a request seeded with ``seed``: the same
    pair always draws the same numbers, whatever else is in the batch."""
    import torch

    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(position) * 0xBF58476D1CE4E5B9) & 0x7FFFFFFFFFFFFFFF
    return torch.Generator().manual_seed(mixed)


# --------------------------------------------------------------------------------------------- the manager seam

REQUEST_KWARGS = {"seed": int, "presence_penalty": float, "frequency_penalty": float}


class _ArgumentsOnly:
    """Stands in the model runner for the processor list: it keeps the step's
    per-request arguments (prepared by transformers as usual) for the sampler and
    leaves the scores alone."""

    do_processing = True

    def __init__(self, original) -> None:
        self.original = original
        self.args = None

    def __call__(self, input_ids, scores, logits_processor_args):
        self.args = logits_processor_args
        return scores

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def _make_request_probe():
    """A per-request "processor" that the manager's processor list calls while it
    prepares each batch: it records the request states whose logits the step
    samples, in row order, so the sampler can read each one's seed, penalties and
    generated tokens. Its own pass over the scores changes nothing."""
    import torch
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    class RequestProbe(ContinuousBatchingLogitsProcessor):
        supported_kwargs = dict(REQUEST_KWARGS)
        ignored_kwargs = ()

        def __init__(self) -> None:
            self.states: list = []

        def fill_defaults(self, int32_tensor) -> None:
            int32_tensor.fill_(0)

        def prepare_tensor_args(self, requests_with_new_token):
            self.states = [r.state for r in requests_with_new_token]
            return torch.zeros(len(self.states), dtype=torch.int32)

        def __call__(self, scores, tensor_arg):
            return scores

    return RequestProbe()


def _processor_rows(processor_list, probe) -> dict[str, int] | None:
    """{"temperature": row, "top_p": row} for the per-request processors, or None when the
    list holds anything this sampler does not implement."""
    from transformers.generation.continuous_batching import cb_logits_processors as cbp

    rows: dict[str, int] = {}
    row = 0
    for proc in getattr(processor_list, "logits_processor", None) or []:
        if isinstance(proc, cbp.ContinuousBatchingTemperatureLogitsWarper) and "temperature" not in rows:
            rows["temperature"] = row
        elif isinstance(proc, cbp.ContinuousBatchingTopPLogitsWarper) and "top_p" not in rows:
            rows["top_p"] = row
        elif proc is not probe:
            return None
        row += 1
    return rows


def _parameters(fn) -> list[str] | None:
    import inspect

    try:
        return [p.name for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):
        return None


def _seam_matches(runner) -> bool:
    """The runner is the one this module was written against (transformers 5.24+):
    ``_sample(scores, output_ids)`` and a processor list called as
    ``(input_ids, scores, logits_processor_args)``. A later transformers that
    changed either keeps its own sampling."""
    needed = ("logit_processor", "_sample", "do_sample", "return_logprobs", "pad_inputs")
    if not all(hasattr(runner, name) for name in needed):
        return False
    return (_parameters(runner._sample) == ["scores", "output_ids"]
            and _parameters(type(runner.logit_processor).__call__) == ["self", "input_ids", "scores",
                                                                        "logits_processor_args"])


class FastSampler:
    """The sorting-free sampler as installed in one manager. ``active`` turns true once a
    batch processor samples with it (then per-request seeds and penalties work);
    ``steps`` counts the steps it sampled."""

    def __init__(self, probe=None) -> None:
        self.probe = probe
        self.active = False
        self.steps = 0

    def install_on(self, runner) -> bool:
        import torch

        if not _seam_matches(runner):
            return False
        if not runner.do_sample or runner.return_logprobs or runner.pad_inputs:
            return False
        original = runner.logit_processor
        if isinstance(original, _ArgumentsOnly):
            return True
        rows = _processor_rows(original, self.probe)
        if rows is None:
            return False
        stash = _ArgumentsOnly(original)
        probe = self.probe

        def sample(scores, output_ids) -> None:
            logits = scores[0]  # [num_logits, vocab], float32 (a fresh copy: the runner upcast it)
            n = logits.shape[0]
            args = stash.args
            temperature = top_p = None
            if args is not None:
                if "temperature" in rows:
                    temperature = args[rows["temperature"], :n].view(dtype=torch.float32)
                if "top_p" in rows:
                    top_p = args[rows["top_p"], :n].view(dtype=torch.float32)
            stash.args = None
            row_generators = None
            states = probe.states if probe is not None else []
            if len(states) == n:
                for i, state in enumerate(states):
                    kw = state.logit_processor_kwargs
                    presence, frequency = kw.get("presence_penalty", 0.0), kw.get("frequency_penalty", 0.0)
                    if presence or frequency:
                        apply_penalties(logits[i], state.generated_tokens, float(presence), float(frequency))
                    seed = kw.get("seed")
                    if seed is not None:
                        row_generators = row_generators or {}
                        row_generators[i] = seeded_generator(seed, len(state.generated_tokens))
            tokens = sample_tokens(logits, temperature, top_p, row_generators=row_generators)
            output_ids[0, :n].copy_(tokens)
            self.steps += 1

        runner.logit_processor = stash
        runner._sample = sample
        return True


def install_fast_sampler(manager) -> FastSampler | None:
    """Make every batch processor ``manager`` creates sample with :func:`sample_tokens`.
    Call it before ``manager.warmup()``. Returns the :class:`FastSampler` (check its
    ``active`` after warm-up), or None when the manager offers no such seam (then it
    keeps its own sampling)."""
    create = getattr(manager, "_create_batch_processor", None)
    processors = getattr(manager, "logit_processor", None)
    if create is None or processors is None:
        return None
    probe = None
    needed = ("logits_processor", "tensors_required", "supported_keys")
    if all(hasattr(processors, name) for name in needed):
        # the probe rides in the manager's own processor list, which sizes the per-request
        # argument storage and validates add_request's keyword arguments
        probe = _make_request_probe()
        processors.logits_processor.append(probe)
        processors.tensors_required += 1
        processors.supported_keys.update(REQUEST_KWARGS)
        processors.do_processing = True
    sampler = FastSampler(probe)
    said: set[bool] = set()

    def create_with_fast_sampler():
        processor = create()
        runner = getattr(processor, "model_runner", None)
        installed = runner is not None and sampler.install_on(runner)
        sampler.active = installed
        if installed not in said:
            said.add(installed)
            log.info("sampling: %s", "sorting-free nucleus sampler" if installed
                     else "transformers' own (the sorting-free sampler does not apply here)")
        return processor

    manager._create_batch_processor = create_with_fast_sampler
    return sampler
