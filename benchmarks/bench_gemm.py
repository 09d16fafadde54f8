#!/usr/bin/env python
"""fp32 GEMMs of SmolLM2-135M's shapes on CPU: MKL (what `F.linear` calls) against oneDNN (`smollm2_nb.serve.decoders.gemm`,
the op PyTorch's compiler emits for a CPU linear layer), a benchmark, not a test.

A prompt through the model is these products: q/k/v and o (576 -> 576, 192), gate/up (576 -> 1536), down (1536 -> 576),
and the LM head (576 -> 49152) for the last position. Each shape and row count is timed both ways in alternating
rounds, with the largest difference from a float64 reference, so a faster product is never a less exact one.

    python benchmarks/bench_gemm.py [--threads 2] [--rows 1,16,64,512] [--rounds 5] [--out FILE]

`ONEDNN_MAX_CPU_ISA=AVX2` holds oneDNN to AVX2 (and `MKL_ENABLE_INSTRUCTIONS=AVX2` MKL), to measure the AVX2 class on a
machine with more.
"""
import argparse, os, statistics, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F

SHAPES = {'q/o (576 -> 576)': (576, 576), 'gate/up (576 -> 1536)': (576, 1536), 'down (1536 -> 576)': (1536, 576),
          'LM head (576 -> 49152)': (576, 49152)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rows', default='1,16,64,512')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--out')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from smollm2_nb.serve.decoders import gemm, ONEDNN_LINEAR
    if not ONEDNN_LINEAR: sys.exit('bench_gemm: this torch has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)')
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), 'unknown') if os.path.exists('/proc/cpuinfo') else 'unknown'
    lines = [f"CPU: {cpu}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {args.threads} threads; "
             f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}; median of {args.rounds} alternating rounds",
             f"{'product':24} {'rows':>5} {'MKL GFLOP/s':>12} {'oneDNN GFLOP/s':>15} {'oneDNN / MKL':>13} {'max rel. error MKL / oneDNN':>28}"]
    print(lines[0], lines[1], sep='\n', flush=True)
    torch.manual_seed(0)
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k)
        for m in map(int, args.rows.split(',')):
            if n * m > 49152 * 64: continue   # the LM head runs on the last position only
            x = torch.randn(m, k)
            ref = x.double() @ w.double().T
            fns = {'mkl': lambda: F.linear(x, w), 'onednn': lambda: gemm(x, w)}
            err = {k_: ((f().double() - ref).abs().max() / ref.abs().max()).item() for k_, f in fns.items()}
            reps = max(3, int(2e9 / (2 * m * k * n)))            # about a second of work per round and product
            rates = {k_: [] for k_ in fns}
            for r in range(args.rounds):
                for k_ in (fns if r % 2 == 0 else reversed(list(fns))):
                    fns[k_]()
                    t = time.perf_counter()
                    for _ in range(reps): fns[k_]()
                    rates[k_].append(2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
            a, b = statistics.median(rates['mkl']), statistics.median(rates['onednn'])
            lines.append(f"{name:24} {m:5d} {a:12.1f} {b:15.1f} {b / a:12.2f}x {err['mkl']:13.1e} / {err['onednn']:.1e}")
            print(lines[-1], flush=True)
    if args.out: Path(args.out).write_text('\n'.join(lines) + '\n')


if __name__ == '__main__': main()
