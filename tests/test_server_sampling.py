"""The sorting-free sampler (images/server/sampling.py): the right distribution, and really in use."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ezrunner.images.server.sampling import _sorted_nucleus_draw, sample_tokens  # noqa: E402

_HF_HUB_OFFLINE_AT_IMPORT = os.environ.get("HF_HUB_OFFLINE")
PROBS = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]  # descending, so token ids are ranks


def _counts(tokens, vocab):
    return torch.bincount(tokens, minlength=vocab).double()


def _draw(top_p, n=40000, temperature=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.tensor(PROBS).log().expand(n, -1).contiguous()
    tp = torch.full((n,), top_p)
    temp = None if temperature is None else torch.full((n,), temperature)
    return sample_tokens(logits, temp, tp, generator=g)


@pytest.mark.parametrize(("top_p", "nucleus"), [(0.5, 2), (0.64, 2), (0.66, 3), (0.85, 4), (0.97, 6), (1.0, 6)])
def test_only_the_nucleus_is_drawn_in_proportion(top_p, nucleus):
    # nucleus = the fewest most-probable tokens whose mass reaches top_p
    n = 40000
    counts = _counts(_draw(top_p, n), len(PROBS))
    assert counts[nucleus:].sum() == 0, counts
    assert (counts[:nucleus] > 0).all(), counts
    expected = torch.tensor(PROBS[:nucleus], dtype=torch.float64)
    expected = expected / expected.sum() * n
    # each frequency within 5 standard deviations of its binomial expectation
    sd = (expected * (1 - expected / n)).sqrt()
    assert ((counts[:nucleus] - expected).abs() < 5 * sd).all(), (counts, expected)


def test_rows_keep_their_own_temperature_and_top_p():
    g = torch.Generator().manual_seed(3)
    logits = torch.tensor(PROBS).log().expand(4, -1).contiguous()
    seen = [set() for _ in range(4)]
    for _ in range(2000):
        t = sample_tokens(logits, torch.tensor([1.0, 1e-5, 1.0, 2.0]), torch.tensor([0.5, 1.0, 1.0, 0.3]), g)
        for row, tok in enumerate(t.tolist()):
            seen[row].add(tok)
    assert seen[0] == {0, 1}  # top_p 0.5
    assert seen[1] == {0}  # temperature ~0: greedy
    assert seen[2] == set(range(6))  # everything, rare tokens included
    assert seen[3] == {0, 1}  # hotter: the top token alone (0.28 of the mass) no longer reaches 0.3


def test_zero_top_p_and_flat_rows_end_with_the_exact_fallback():
    # a flat 4096-token row with top_p tiny needs more rounds than allowed: the sort fallback answers
    g = torch.Generator().manual_seed(5)
    logits = torch.zeros(3, 4096)
    logits[:, 17] = 0.001  # one token barely ahead
    out = sample_tokens(logits, None, torch.tensor([0.0, 1e-6, 1e-6]), g)
    assert out.tolist() == [17, 17, 17]


def test_sorted_fallback_matches_the_nucleus():
    g = torch.Generator().manual_seed(9)
    probs = torch.tensor(PROBS).expand(20000, -1).contiguous()
    counts = _counts(_sorted_nucleus_draw(probs, torch.full((20000,), 0.66), g), 6)
    assert counts[3:].sum() == 0 and (counts[:3] > 0).all()


def test_empty_batch():
    assert sample_tokens(torch.zeros(0, 10)).shape == (0,)


def test_the_server_engine_samples_with_it(tiny_model_dir):
    """Through transformers' real batching manager: the sampler is installed, runs every
    step, honours per-request temperature (greedy is deterministic) and the batch still
    completes."""
    import asyncio

    # (load_engine switches the process offline; conftest restores the switches afterwards)
    from ezrunner.images.server.config import ServerConfig
    from ezrunner.images.server.engine import GenerationParams, load_engine
    from ezrunner.images.server.metrics import ServerMetrics

    engine = load_engine(ServerConfig(model_dir=str(tiny_model_dir), served_model_name="tiny", device="cpu",
                                      max_concurrency=4), ServerMetrics())
    try:
        assert engine.sampler is not None and engine.sampler.active and engine.supports_request_sampling
        before = engine.sampler.steps
        assert before > 0  # the warm-up already sampled with it

        async def run(i: int, temperature: float) -> str:
            req = engine.submit(f"r{i}", [0, 5, 9, 12, 40], GenerationParams(
                max_new_tokens=12, temperature=temperature, top_p=0.9, ignore_eos=True))
            text = ""
            async for d in req.deltas():
                text += d.text
            assert req.completion_tokens == 12
            return text

        async def main():
            return await asyncio.gather(run(0, 0.0), run(1, 0.0), run(2, 1.0), run(3, 0.7))

        greedy_a, greedy_b, *_ = asyncio.run(main())
        assert greedy_a == greedy_b
        assert engine.sampler.steps >= before + 12
    finally:
        engine.stop()


def test_the_in_process_engine_left_the_offline_switch_as_it_was():
    """Runs right after the in-process engine above: its HF_HUB_OFFLINE=1 must not leak
    into later tests (it once broke the TUI's hub replays in CI)."""
    assert os.environ.get("HF_HUB_OFFLINE") == _HF_HUB_OFFLINE_AT_IMPORT


def test_a_changed_seam_keeps_transformers_sampling():
    """A future transformers whose runner samples with other arguments is left alone."""
    from ezrunner.images.server.sampling import FastSampler
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessorList,
    )
    from transformers.generation.logits_process import LogitsProcessorList

    class Runner:
        do_sample, return_logprobs, pad_inputs = True, False, False

        def __init__(self):
            self.logit_processor = ContinuousBatchingLogitsProcessorList(LogitsProcessorList(),
                                                                         per_request_processors=True)

        def _sample(self, scores, output_ids):
            pass

    class NewerRunner(Runner):
        def _sample(self, scores, output_ids, generator):
            pass

    assert FastSampler().install_on(Runner()) is True
    newer = NewerRunner()
    assert FastSampler().install_on(newer) is False
    assert type(newer.logit_processor).__name__ == "ContinuousBatchingLogitsProcessorList"
    graphs = Runner()
    graphs.pad_inputs = True  # CUDA graphs or compile: the step must stay capturable
    assert FastSampler().install_on(graphs) is False


def test_penalties_follow_openai():
    from ezrunner.images.server.sampling import apply_penalties

    row = torch.zeros(6)
    apply_penalties(row, [2, 2, 5, 2], presence=0.5, frequency=0.25)
    assert row.tolist() == [0.0, 0.0, -1.25, 0.0, 0.0, -0.75]
    row = torch.zeros(6)
    apply_penalties(row, [1, 1], presence=-1.0, frequency=0.0)  # negative values favour repeats
    assert row.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # greedy then picks the runner-up instead of repeating itself
    logits = torch.tensor([[3.0, 2.5, 0.0]])
    apply_penalties(logits[0], [0], presence=1.0, frequency=0.0)
    assert sample_tokens(logits, torch.tensor([1e-5])).tolist() == [1]


def test_a_seeded_row_draws_the_same_whatever_the_batch():
    from ezrunner.images.server.sampling import seeded_generator

    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(2))
    alone = [sample_tokens(logits[2:3], None, torch.tensor([0.95]),
                           row_generators={0: seeded_generator(99, pos)}).item() for pos in range(20)]
    batched = [sample_tokens(logits, None, torch.full((5,), 0.95),
                             row_generators={2: seeded_generator(99, pos)})[2].item() for pos in range(20)]
    assert alone == batched
    assert len(set(alone)) > 1  # the position moves the stream on
