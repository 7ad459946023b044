"""The KV-cache sampler: greedy text identical to nanoGPT's crop-and-recompute, far past block_size, batched."""
import numpy as np

import reference
from nanogpt_tg.model import GPTConfig
from nanogpt_tg.sample import Generator
from test_model import with_big_weights

CONFIG = GPTConfig(block_size=64, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)


def crop_and_recompute(weights: dict, prompt: np.ndarray, n: int) -> np.ndarray:
    """nanoGPT's generate with temperature 0, in float64 numpy: a full forward of the last block_size tokens per token."""
    out = prompt.copy()
    for _ in range(n):
        logits = reference.forward(weights, out[:, -CONFIG.block_size:], CONFIG.n_head)[:, -1, :]
        out = np.concatenate([out, logits.argmax(-1)[:, None]], 1)
    return out


def test_greedy_1000_tokens_equal_crop_and_recompute_with_batched_rows():
    model, weights = with_big_weights(CONFIG, seed=3)
    prompt = np.array([[1, 2, 3, 4, 5], [7, 7, 0, 9, 2]])  # two rows at once, different prompts
    gen = Generator(model, rows=2)
    out = gen.generate(prompt, max_new_tokens=1000, temperature=0.0)
    assert gen.cache.step_jit.captured is not None  # the cached steps ran through one captured jit
    ref = crop_and_recompute(weights, prompt, 1000)
    assert len(set(ref[0, 5:].tolist())) > 2, "the reference text is too repetitive to test anything"
    np.testing.assert_array_equal(out, ref)  # 1005 tokens, block_size 64: cache steps, then the sliding window



def test_a_generator_reads_the_weights_as_they_are_when_it_starts():
    """The sampler keeps transposed copies of the weights between tokens; each generate call takes them afresh, so
    a Generator built before the weights changed (as training goes on) samples from the new ones: its greedy text
    equals a new Generator's and the float64 reference's on the changed weights, past block_size."""
    model, weights = with_big_weights(CONFIG, seed=5)
    prompt = np.array([[3, 1, 4, 1, 5], [2, 7, 1, 8, 2]])
    gen = Generator(model, rows=2)
    before = gen.generate(prompt, max_new_tokens=80, temperature=0.0)
    for name, p in model.state_dict().items():  # new weights in place, as an optimizer step writes them
        if name.endswith("c_fc.weight") or name == "transformer.wte.weight":
            weights[name] = weights[name][::-1].copy()
            p.assign(p.flip(0)).realize()
    after = gen.generate(prompt, max_new_tokens=80, temperature=0.0)
    assert not np.array_equal(after, before), "the change did not alter the text: the test shows nothing"
    np.testing.assert_array_equal(after, crop_and_recompute(weights, prompt, 80))
    np.testing.assert_array_equal(after, Generator(model, rows=2).generate(prompt, max_new_tokens=80, temperature=0.0))


def test_a_short_prompt_is_prefilled_one_step_per_token():
    """A prompt of at most block_size // 16 tokens goes through the one-token step, a token at a time, not the
    whole window's prefill: the same greedy text, past block_size."""
    model, weights = with_big_weights(CONFIG, seed=3)
    prompt = np.array([[1, 2, 3], [7, 7, 0]])
    gen = Generator(model, rows=2)
    out = gen.generate(prompt, max_new_tokens=100, temperature=0.0)
    assert gen.cache.prefill_jit.cnt == 0  # never called
    np.testing.assert_array_equal(out, crop_and_recompute(weights, prompt, 100))


def test_a_large_vocabulary_padded_for_the_sampler_gives_the_same_text():
    """Above 4096 tokens the sampler's lm_head copy is padded to a multiple of 64 columns (GPT-2's 50257 divides by
    no vector tile); the padding never reaches the logits: (rows, vocab_size), and the reference's greedy text."""
    config = GPTConfig(block_size=16, vocab_size=4099, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=True)
    model, weights = with_big_weights(config, seed=4)
    gen = Generator(model, rows=1)
    copies = gen.cache.weights_t
    assert copies.copies[[id(lin) for lin in copies.linears].index(id(model.lm_head))].shape == (16, 4160)
    prompt = np.array([[5, 4097, 3]])
    assert gen.cache.next_logits(prompt).shape == (1, 4099)
    out = gen.generate(prompt, max_new_tokens=20, temperature=0.0)
    ref = prompt.copy()
    for _ in range(20):
        logits = reference.forward(weights, ref[:, -config.block_size:], config.n_head)[:, -1, :]
        ref = np.concatenate([ref, logits.argmax(-1)[:, None]], 1)
    np.testing.assert_array_equal(out, ref)
