"""Fused q/k/v and gate/up projections (images/server/fuse.py) give the model's own results."""

from __future__ import annotations

import gc
import weakref

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ezrunner.images.server.fuse import fuse_projections  # noqa: E402


def _load(model_dir, dtype=None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype or torch.float32).eval()


def _inputs(model, n=12):
    g = torch.Generator().manual_seed(7)
    return torch.randint(5, model.config.vocab_size, (2, n), generator=g)


def test_fused_model_gives_the_same_logits_and_tokens(tiny_model_dir):
    plain, fused = _load(tiny_model_dir), _load(tiny_model_dir)
    layers = plain.config.num_hidden_layers
    assert fuse_projections(fused) == 2 * layers  # q/k/v and gate/up in every decoder layer
    attn = fused.model.layers[0].self_attn
    assert type(attn.q_proj).__name__ == "FusedSlice"
    ids = _inputs(plain)
    with torch.inference_mode():
        a = plain(ids).logits
        b = fused(ids).logits
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        # greedy decoding through the KV cache picks the very same tokens
        ga = plain.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        gb = fused.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ga, gb)


def test_fused_weights_replace_the_originals_without_copies(tiny_model_dir):
    plain, fused = _load(tiny_model_dir), _load(tiny_model_dir)
    fuse_projections(fused)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_fused = sum(p.numel() for p in fused.parameters())
    assert n_fused == n_plain  # stacked, not duplicated
    attn_p, attn_f = plain.model.layers[1].self_attn, fused.model.layers[1].self_attn
    torch.testing.assert_close(attn_f.k_proj.weight, attn_p.k_proj.weight, rtol=0, atol=0)
    assert attn_f.v_proj.weight.shape == attn_p.v_proj.weight.shape


def test_a_slice_called_alone_or_out_of_order_is_still_right(tiny_model_dir):
    plain, fused = _load(tiny_model_dir), _load(tiny_model_dir)
    fuse_projections(fused)
    mp, mf = plain.model.layers[0].mlp, fused.model.layers[0].mlp
    x, y = torch.randn(1, 3, plain.config.hidden_size), torch.randn(1, 3, plain.config.hidden_size)
    with torch.inference_mode():
        # up before gate, with two different tensors, then gate with a third: no stale results
        torch.testing.assert_close(mf.up_proj(x), mp.up_proj(x))
        torch.testing.assert_close(mf.gate_proj(y), mp.gate_proj(y))
        torch.testing.assert_close(mf.up_proj(x), mp.up_proj(x))
        torch.testing.assert_close(mf.up_proj(y), mp.up_proj(y))
        torch.testing.assert_close(mf(x), mp(x))


def test_the_group_lets_go_of_the_step_input(tiny_model_dir):
    fused = _load(tiny_model_dir)
    fuse_projections(fused)
    attn = fused.model.layers[0].self_attn
    x = torch.randn(1, 2, fused.config.hidden_size)
    ref = weakref.ref(x)
    with torch.inference_mode():
        attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    del x
    gc.collect()
    assert ref() is None


def test_layers_that_are_not_plain_linear_or_disagree_are_left_alone():
    from torch import nn

    class Lora(nn.Linear):
        pass

    class Block(nn.Module):
        def __init__(self, q, k, v):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = q, k, v

    mixed = Block(nn.Linear(8, 8), nn.Linear(8, 4).to(torch.bfloat16), nn.Linear(8, 4))
    wrapped = Block(nn.Linear(8, 8), Lora(8, 4), nn.Linear(8, 4))
    biased = Block(nn.Linear(8, 8, bias=False), nn.Linear(8, 4), nn.Linear(8, 4))
    ok = Block(nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(8, 4))
    root = nn.ModuleList([mixed, wrapped, biased, ok])
    assert fuse_projections(root) == 1
    assert type(mixed.q_proj) is nn.Linear and type(wrapped.q_proj) is nn.Linear and type(biased.q_proj) is nn.Linear
    x = torch.randn(2, 8)
    with torch.inference_mode():
        out = ok.q_proj(x), ok.k_proj(x), ok.v_proj(x)
    assert [t.shape[-1] for t in out] == [8, 4, 4]
