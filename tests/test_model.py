"""The tinygrad GPT against an independent float64 numpy reference (tests/reference.py), plus its invariants."""
import math

import numpy as np
import pytest
from tinygrad import Device, Tensor, dtypes

import reference
from nanogpt_tg.model import GPT, GPTConfig

TINY = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=True)


def with_big_weights(config: GPTConfig, seed: int = 0) -> tuple[GPT, dict]:
    """A model with O(1) weights (std 0.5), where exact and tanh GELU differ visibly, and its weights in float64."""
    model = GPT(config, verbose=False)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, p in model.state_dict().items():
        w = rng.normal(0.0, 0.5, size=p.shape)
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            w += 1.0
        weights[name] = w
        p.replace(Tensor(w.astype(np.float32)))
    Tensor.realize(*model.parameters())
    return model, weights


@pytest.mark.parametrize("bias", [True, False])
def test_logits_loss_and_every_gradient_match_numpy_reference(bias):
    config = GPTConfig(**{**TINY.__dict__, "bias": bias})
    model, weights = with_big_weights(config, seed=1 if bias else 2)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, config.vocab_size, size=(2, 6))
    targets = rng.integers(0, config.vocab_size, size=(2, 6))
    logits, loss = model(Tensor(idx, dtype=dtypes.int32), Tensor(targets, dtype=dtypes.int32))
    loss.backward()

    ref_logits = reference.forward(weights, idx, config.n_head)
    # float32 against float64 with O(1) logits: 1e-4 absolute
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-4, rtol=1e-4)
    assert abs(loss.item() - reference.cross_entropy(ref_logits, targets)) < 1e-4

    ref_grads = reference.numerical_grads(weights, idx, targets, config.n_head)
    assert set(ref_grads) == set(model.state_dict())
    for name, p in model.state_dict().items():
        # central differences in float64 are good to ~1e-9; the float32 analytic gradient to ~1e-5
        np.testing.assert_allclose(p.grad.numpy(), ref_grads[name], atol=2e-5, rtol=1e-3, err_msg=name)


def test_gelu_is_exact_not_tanh():
    x = Tensor([-3.0, -1.0, 0.5, 2.0])
    exact = reference.gelu(np.array([-3.0, -1.0, 0.5, 2.0]))
    np.testing.assert_allclose(x.gelu(approximate="none").numpy(), exact, atol=1e-6)
    assert np.abs(x.gelu().numpy() - exact).max() > 1e-4  # the tanh default would be caught


def test_causal_future_tokens_do_not_change_past_logits():
    model, _ = with_big_weights(TINY, seed=4)
    rng = np.random.default_rng(5)
    a = rng.integers(0, TINY.vocab_size, size=(1, 8))
    b = a.copy()
    b[:, 5:] = (b[:, 5:] + 1) % TINY.vocab_size
    la = model(Tensor(a, dtype=dtypes.int32))[0].numpy()
    lb = model(Tensor(b, dtype=dtypes.int32))[0].numpy()
    np.testing.assert_allclose(la[:, :5], lb[:, :5], atol=1e-6)  # past: unchanged
    assert np.abs(la[:, 5:] - lb[:, 5:]).max() > 1e-3  # future: changed


def test_sequence_longer_than_block_size_raises():
    model = GPT(TINY, verbose=False)
    with pytest.raises(AssertionError, match="block size"):
        model(Tensor.zeros(1, 9, dtype=dtypes.int32))


def test_init_statistics_and_loss_near_ln_vocab():
    config = GPTConfig(block_size=32, vocab_size=65, n_layer=4, n_head=4, n_embd=64, dropout=0.0, bias=False)
    model = GPT(config, seed=0, verbose=False)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert abs(sd["transformer.wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(2 * 4)) < 0.001
    np.testing.assert_array_equal(sd["transformer.h.0.ln_1.weight"], 1.0)
    assert "transformer.h.0.ln_1.bias" not in sd  # bias=False: bias-free LayerNorm and Linear
    assert model.lm_head.weight is model.transformer["wte"].weight  # tied
    idx = np.random.default_rng(0).integers(0, 65, size=(4, 32))
    _, loss = model(Tensor(idx, dtype=dtypes.int32), Tensor(np.roll(idx, -1, 1), dtype=dtypes.int32))
    assert abs(loss.item() - math.log(65)) < 0.05  # ln(65) = 4.174


def test_no_two_layers_share_initial_weights():
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=3, n_head=2, n_embd=8, bias=True), verbose=False)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    for name in [k for k in sd if k.startswith("transformer.h.0.") and k.endswith("weight") and "ln_" not in k]:
        for other in (name.replace(".h.0.", ".h.1."), name.replace(".h.0.", ".h.2.")):
            assert not np.array_equal(sd[name], sd[other]), f"{name} and {other} start equal"
    assert not np.array_equal(sd["transformer.wte.weight"][:8], sd["transformer.wpe.weight"][:8])


def test_parameter_count_like_nanogpt():
    preset = GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False)
    assert round(GPT(preset, verbose=False).get_num_params() / 1e6, 2) == 10.65
    cpu = GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, bias=False)
    assert round(GPT(cpu, verbose=False).get_num_params() / 1e6, 2) == 0.80


def test_parameter_names_are_nanogpts():
    names = set(GPT(TINY, verbose=False).state_dict())
    for n in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.bias",
              "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.bias", "transformer.h.1.mlp.c_fc.weight",
              "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.ln_2.weight", "transformer.ln_f.bias"]:
        assert n in names


@pytest.mark.parametrize("rows, bias", [(40, True), (40, False), (5, True)])
def test_linear_output_and_gradients_match_numpy(rows, bias):
    """Linear against numpy in float64: y = x @ W.T + b, dx = g @ W, dW = g.T @ x, db = sum g. From 32 rows on the
    weight is multiplied as a transposed copy inside a call with its own backward (layers._linear_grad); below, as is.
    Sums of 24 O(1) terms in float32: 1e-5 relative + 1e-5 absolute."""
    from nanogpt_tg.layers import MIN_ROWS_FOR_COPY, Linear

    rng = np.random.default_rng(rows + bias)
    lin = Linear(24, 56, bias=bias)
    w, b = rng.standard_normal((56, 24)), rng.standard_normal(56)
    lin.weight = Tensor(w.astype(np.float32)).contiguous().realize()
    lin.bias = Tensor(b.astype(np.float32)).contiguous().realize() if bias else None
    x, g = rng.standard_normal((2, rows // 2, 24)), rng.standard_normal((2, rows // 2, 56))
    xt = Tensor(x.astype(np.float32)).contiguous().realize()
    y = lin(xt)
    params = [xt, lin.weight] + ([lin.bias] if bias else [])
    grads = (y * Tensor(g.astype(np.float32))).sum().gradient(*params)
    assert (rows >= MIN_ROWS_FOR_COPY) == (rows == 40)
    want = [g @ w, g.reshape(-1, 56).T @ x.reshape(-1, 24)] + ([g.reshape(-1, 56).sum(0)] if bias else [])
    np.testing.assert_allclose(y.numpy(), x @ w.T + (b if bias else 0), rtol=1e-5, atol=1e-5)
    for name, got, ref in zip(["x", "weight", "bias"], grads, want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("rows, approximate", [(40, "none"), (40, "tanh"), (5, "none")])
def test_gelu_linear_output_and_gradients_match_numpy(rows, approximate):
    """layers.gelu_linear(lin, h) is lin(gelu(h)), GELU's output recomputed in the backward from 32 rows on (below, the
    plain layers): the output and the gradients of h, W and b against numpy in float64, with GELU's derivative
    Phi(h) + h phi(h) exact or tanh's by hand. Sums of 48 O(1) terms in float32: 1e-5 relative + 1e-5 absolute."""
    from nanogpt_tg.layers import Linear, gelu_linear

    rng = np.random.default_rng(rows)
    lin = Linear(48, 16, bias=True)
    w, b = rng.standard_normal((16, 48)), rng.standard_normal(16)
    lin.weight, lin.bias = (Tensor(v.astype(np.float32)).contiguous().realize() for v in (w, b))
    h, g = rng.standard_normal((2, rows // 2, 48)), rng.standard_normal((2, rows // 2, 16))
    ht = Tensor(h.astype(np.float32)).contiguous().realize()
    y = gelu_linear(lin, ht, approximate)
    dh, dw, db = (y * Tensor(g.astype(np.float32))).sum().gradient(ht, lin.weight, lin.bias)
    if approximate == "none":
        a = reference.gelu(h)
        da_dh = 0.5 * (1 + np.vectorize(math.erf)(h / math.sqrt(2))) + h * np.exp(-h * h / 2) / math.sqrt(2 * math.pi)
    else:
        u = math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)
        a = 0.5 * h * (1 + np.tanh(u))
        da_dh = 0.5 * (1 + np.tanh(u)) + 0.5 * h * (1 - np.tanh(u) ** 2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * h**2)
    g2, a2 = g.reshape(-1, 16), a.reshape(-1, 48)
    np.testing.assert_allclose(y.numpy(), a @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dh.numpy(), (g @ w) * da_dh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.numpy(), g2.T @ a2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db.numpy(), g2.sum(0), rtol=1e-5, atol=1e-5)


def test_linear_weight_gradient_over_many_tokens_matches_numpy():
    """From MIN_ROWS_FOR_CHUNKED_GRAD tokens on, dW = g.T @ x is summed in chunks of tokens (layers.weight_grad):
    the same numbers. float32 sums of 4096 products of O(1) values against float64: 1e-4 relative, plus 1e-3
    absolute."""
    from nanogpt_tg.layers import MAX_GRAD_CHUNKS, MIN_GRAD_CHUNK, MIN_ROWS_FOR_CHUNKED_GRAD, Linear, grad_chunk

    assert grad_chunk(MIN_ROWS_FOR_CHUNKED_GRAD - MIN_GRAD_CHUNK) is None and grad_chunk(768) == MIN_GRAD_CHUNK
    assert grad_chunk(16384) == 16384 // MAX_GRAD_CHUNKS and grad_chunk(1000) is None
    rng = np.random.default_rng(7)
    rows = 4096
    assert grad_chunk(rows) == MIN_GRAD_CHUNK  # the chunked path, 32 chunks
    lin = Linear(16, 24, bias=True)
    w = rng.standard_normal((24, 16))
    lin.weight = Tensor(w.astype(np.float32)).contiguous().realize()
    lin.bias = Tensor(np.zeros(24, np.float32)).contiguous().realize()
    x, g = rng.standard_normal((rows, 16)), rng.standard_normal((rows, 24))
    xt = Tensor(x.astype(np.float32)).contiguous().realize()
    dx, dw, db = (lin(xt) * Tensor(g.astype(np.float32))).sum().gradient(xt, lin.weight, lin.bias)
    np.testing.assert_allclose(dw.numpy(), g.T @ x, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx.numpy(), g @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db.numpy(), g.sum(0), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("in_features, out_features, rows, row_tiles", [(48, 80, 64, False), (80, 48, 1024, False),
                                                                      (48, 80, 1024, True)])
def test_linear_with_weights_in_strips_matches_numpy(monkeypatch, in_features, out_features, rows, row_tiles):
    """On the CPU, from MIN_ROWS_FOR_PACKING rows on, each product's right operand is copied into strips of STRIP
    columns (layers.matmul): the forward's transposed weight, the backward's weight for dx, and x for dW (with 1024
    rows, chunk by chunk); with row_tiles (A_BYTES made 0), every product ROW_TILE rows of its left operand at a time.
    Forward and all gradients equal numpy's float64 to 1e-4 relative plus 1e-4 absolute (float32 sums of up to 1024
    O(1) products)."""
    from nanogpt_tg import layers

    if row_tiles:
        monkeypatch.setattr(layers, "A_BYTES", 0)
    rng = np.random.default_rng(12)
    lin = layers.Linear(in_features, out_features, bias=True)
    w, b = rng.standard_normal((out_features, in_features)), rng.standard_normal(out_features)
    lin.weight = Tensor(w.astype(np.float32)).contiguous().realize()
    lin.bias = Tensor(b.astype(np.float32)).contiguous().realize()
    x, g = rng.standard_normal((2, rows // 2, in_features)), rng.standard_normal((2, rows // 2, out_features))
    xt = Tensor(x.astype(np.float32)).contiguous().realize()
    assert layers.packs(xt.reshape(rows, -1), out_features) == (Device.DEFAULT == "CPU")
    assert (layers.grad_chunk(rows) is not None) == (rows == 1024)
    y = lin(xt)
    dx, dw, db = (y * Tensor(g.astype(np.float32))).sum().gradient(xt, lin.weight, lin.bias)
    g2, x2 = g.reshape(rows, -1), x.reshape(rows, -1)
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx.numpy(), g @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw.numpy(), g2.T @ x2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db.numpy(), g2.sum(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("T, hs", [(12, 8), (32, 16)])
def test_attention_products_from_views_of_qkv_match_numpy(T, hs):
    """layers.scores (q @ k^T) and layers.weighted (att @ v), on q, k, v as the model has them: views of one (B, T, 3C)
    buffer; with 32 keys of 16 dimensions each product's right operand is copied into strips (layers.matmul), with 12
    of 8 into a transposed buffer. The products and the gradients of sum(g1 * scores) + sum(g2 * weighted) with respect
    to that buffer and att equal numpy's float64 to 1e-5 relative plus 1e-5 absolute (float32 sums of up to 32 O(1)
    products)."""
    from nanogpt_tg.layers import scores, weighted

    B, nh = 2, 3
    C = nh * hs
    rng = np.random.default_rng(13)
    qkv, att = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, nh, T, T))
    g1, g2 = rng.standard_normal((B, nh, T, T)), rng.standard_normal((B, nh, T, hs))
    qkv_t, att_t = [Tensor(a.astype(np.float32)).contiguous().realize() for a in (qkv, att)]
    q, k, v = [t.reshape(B, T, nh, hs).transpose(1, 2) for t in qkv_t.split(C, dim=-1)]
    s, y = scores(q, k), weighted(att_t, v)
    loss = (s * Tensor(g1.astype(np.float32))).sum() + (y * Tensor(g2.astype(np.float32))).sum()
    d_qkv, d_att = loss.gradient(qkv_t, att_t)

    qn, kn, vn = [a.reshape(B, T, nh, hs).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1)]
    np.testing.assert_allclose(s.numpy(), qn @ kn.transpose(0, 1, 3, 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), att @ vn, rtol=1e-5, atol=1e-5)
    dq, dk, dv = g1 @ kn, g1.transpose(0, 1, 3, 2) @ qn, att.transpose(0, 1, 3, 2) @ g2
    want = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C) for d in (dq, dk, dv)], axis=-1)
    np.testing.assert_allclose(d_qkv.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_att.numpy(), g2 @ vn.transpose(0, 1, 3, 2), rtol=1e-5, atol=1e-5)
