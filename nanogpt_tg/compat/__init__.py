"""nanoGPT and PyTorch compatibility: reading ckpt.pt and meta.pkl safely, PyTorch's CPU generator, nanoGPT's init."""
