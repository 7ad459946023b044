"""Time BPE training and encoding: python tools/bench_bpe.py [--input FILE] [--mb 1.0] [--vocab_size 1024].

Trains on the first --mb megabytes of the text (Tiny Shakespeare by default) a few times and prints the best and
median times, then the encoding speed over the whole text. Figures go to BENCHMARKS.md.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanogpt_tg.bpe import BPETokenizer, gpt2_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = next((p for p in (ROOT / "data/shakespeare_char/input.txt", ROOT.parent / "shared/data/tinyshakespeare/input.txt")
                if p.is_file()), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=DEFAULT, help="a UTF-8 text (default: Tiny Shakespeare)")
    parser.add_argument("--mb", type=float, default=1.0, help="train on this many megabytes (10^6 bytes) of it")
    parser.add_argument("--vocab_size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.input is None:
        sys.exit("error: no text found; pass --input FILE or run python data/shakespeare_char/prepare.py first")
    text = Path(args.input).read_text(encoding="utf-8")
    data = text.encode("utf-8")[: int(args.mb * 1e6)].decode("utf-8", errors="ignore")
    t0 = time.perf_counter()
    gpt2_split()
    print(f"building the GPT-2 pre-split regex (once per process): {time.perf_counter() - t0:.2f}s")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tok = BPETokenizer.train(data, args.vocab_size, special_tokens=["<|endoftext|>"])
        times.append(time.perf_counter() - t0)
    print(f"train: {len(data.encode('utf-8')):,} bytes to vocab {tok.vocab_size} ({len(tok.merges)} merges): "
          f"best {min(times):.2f}s, median {statistics.median(times):.2f}s of {args.repeats}")
    t0 = time.perf_counter()
    ids = tok.encode(text)
    dt = time.perf_counter() - t0
    assert tok.decode(ids) == text
    print(f"encode: {len(text):,} characters to {len(ids):,} tokens in {dt:.2f}s "
          f"({len(text.encode('utf-8')) / dt / 1e6:.1f} MB/s, {len(text.encode('utf-8')) / len(ids):.2f} bytes/token)")


if __name__ == "__main__":
    main()
