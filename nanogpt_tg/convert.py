"""Convert checkpoints between PyTorch nanoGPT (ckpt.pt + meta.pkl) and this project (ckpt.safetensors).

  python -m nanogpt_tg.convert --to=safetensors out-shakespeare-char out-tg        # needs no torch
  python -m nanogpt_tg.convert --to=nanogpt out-tg out-torch                        # needs torch
"""
import argparse
import json
import sys
from pathlib import Path

from .checkpoint import CKPT_NAME, FORMAT, VERSION, CheckpointError, load_checkpoint, write_safetensors
from .compat.nanogpt_ckpt import (META_NAME, PT_NAME, find_vocabulary, read_nanogpt_checkpoint, read_vocabulary,
                           write_meta_pkl, write_nanogpt_checkpoint)


def to_safetensors(in_dir: Path, out_dir: Path, meta_path: Path | None = None) -> Path:
    """in_dir/ckpt.pt (and its vocabulary) -> out_dir/ckpt.safetensors, the format save_checkpoint writes."""
    if not (in_dir / PT_NAME).is_file():
        hint = " (it holds a ckpt.safetensors: use --to=nanogpt)" if (in_dir / CKPT_NAME).is_file() else ""
        raise CheckpointError(f"{in_dir / PT_NAME} not found{hint}")
    arrays, info = read_nanogpt_checkpoint(in_dir / PT_NAME)
    info["meta"] = find_vocabulary(in_dir, info, meta_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CKPT_NAME
    write_safetensors(path, arrays, {FORMAT: json.dumps({"format": FORMAT, "version": VERSION, **info})})
    return path


def to_nanogpt(in_dir: Path, out_dir: Path, meta_path: Path | None = None) -> Path:
    """in_dir/ckpt.safetensors -> out_dir/ckpt.pt and out_dir/meta.pkl, as nanoGPT's train.py and prepare.py save."""
    arrays, info = load_checkpoint(in_dir)
    meta = read_vocabulary(meta_path) if meta_path is not None else info.get("meta")
    if meta is None:
        raise CheckpointError(f"{in_dir / CKPT_NAME} holds no vocabulary; give one with --meta=PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PT_NAME
    write_nanogpt_checkpoint(path, arrays, info)
    write_meta_pkl(out_dir / META_NAME, meta)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt_tg.convert", description=__doc__.split("\n")[0],
                                     epilog="nanoGPT's sample.py reads the vocabulary from data/<dataset>/meta.pkl: "
                                            "copy the written meta.pkl there.")
    parser.add_argument("--to", required=True, choices=["safetensors", "nanogpt"],
                        help="safetensors: IN_DIR/ckpt.pt -> OUT_DIR/ckpt.safetensors; "
                             "nanogpt: IN_DIR/ckpt.safetensors -> OUT_DIR/ckpt.pt + meta.pkl (needs torch)")
    parser.add_argument("in_dir", metavar="IN_DIR", type=Path, help="directory holding the checkpoint to convert")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="directory to write the converted checkpoint to")
    parser.add_argument("--meta", type=Path, default=None, metavar="PATH",
                        help="vocabulary (meta.pkl or meta.json); default for ckpt.pt: data/<config dataset>/meta.pkl "
                             "or meta.json, then IN_DIR/meta.pkl; for ckpt.safetensors: the one saved in it")
    args = parser.parse_args(argv)
    try:
        if args.to == "safetensors":
            path = to_safetensors(args.in_dir, args.out_dir, args.meta)
        else:
            path = to_nanogpt(args.in_dir, args.out_dir, args.meta)
    except (CheckpointError, ValueError, FloatingPointError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}" + (f" and {path.with_name(META_NAME)}" if args.to == "nanogpt" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
