"""nanogpt-tg: nanoGPT ported to tinygrad. Modules: config, tokenizer, data, model, train, sample, checkpoint."""
