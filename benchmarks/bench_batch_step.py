"""The batched C++ step alone (`BatchDecoder.forward`, no server): ms per step and tokens/s for B sequences decoding
together, against B = 1, with 2 and 1 torch threads, the official SmolLM2-135M-Instruct GGUF in its own blocks.

With `--before REV`, the step as it stood at git revision REV against the working tree's instead, in one process (a
shared host's speed drifts more between runs than a kernel change is worth): the same weights, B sequences whose
prompt is `--positions` tokens, 64 steps per round and build, the builds alternating, the median ms per step of each
and the median of the per-round ratios.

    python benchmarks/bench_batch_step.py [--batches 1 8 16] [--steps 16] [--rounds 2]
    python benchmarks/bench_batch_step.py --before HEAD~1 --batches 1 8 --positions 30 1000 --rounds 12"""
from __future__ import annotations
import argparse, os, statistics, time
import torch
from bench_serve import cpu_name


def compare(args):
    "The step at `args.before` against the working tree's, alternating in one process."
    from bench_step_ab import build_at
    from smollm2_nb.serve import decoders as D
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.gguf_native import GGUFHeader, load_gguf_native, GGUFDecoder
    from smollm2_nb.serve.batch import BatchDecoder
    torch.set_num_threads(args.threads[0])
    isa = D.cpu_isa()
    (sha, before), after = build_at(args.before, isa, D.CPU_ISAS[isa][0]), D.cpu_decode_kernels(isa)
    model, packed = load_gguf_native(GGUFHeader(official_gguf()), after)      # the repacked layout both builds read
    builds = {'before': BatchDecoder(model, GGUFDecoder(model, packed, before)), 'after': BatchDecoder(model, GGUFDecoder(model, packed, after))}
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); class {isa}; {args.threads[0]} threads; step at {args.before} = {sha} (before) "
          f"vs the working tree (after); {args.rounds} rounds of 64 steps", flush=True)
    for P in args.positions:
        for B in args.batches:
            ms = {k: [] for k in builds}
            for r in range(args.rounds):
                for name in (('before', 'after') if r % 2 == 0 else ('after', 'before')):
                    bd = builds[name]
                    seqs = [bd.new(P + 80) for _ in range(B)]
                    bd.forward([(s, list(range(1, P + 1))) for s in seqs])
                    t = time.perf_counter()
                    for _ in range(64): bd.forward([(s, [5]) for s in seqs])
                    ms[name].append((time.perf_counter() - t) / 64 * 1000)
            ratios = [b / a for b, a in zip(ms['before'], ms['after'])]
            print(f"B={B:>2}, prompt {P:>4} tokens: before {statistics.median(ms['before']):.2f} ms/step, after {statistics.median(ms['after']):.2f} ms/step; "
                  f"after is {statistics.median(ratios):.3f}x as fast (median of the rounds' ratios; range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batches', type=int, nargs='+', default=[1, 8, 16])
    p.add_argument('--steps', type=int, default=16)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--threads', type=int, nargs='+', default=[2, 1])
    p.add_argument('--before', default=None, help='a git revision: its step against the working tree\'s (see above)')
    p.add_argument('--positions', type=int, nargs='+', default=[30], help='with --before: prompt tokens before the 64 steps')
    args = p.parse_args(argv)
    if args.before: return compare(args)
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.load import load_for_inference
    from smollm2_nb.serve.batch import BatchDecoder
    m, tok, info = load_for_inference(official_gguf(), 'auto', 'cpu')
    bd = BatchDecoder(m, info['decoder'])
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); {info['serving']} weights, class {info['decoder'].isa}; positions ~100")
    def run(B):
        seqs = [bd.new(200) for _ in range(B)]
        bd.forward([(s, list(range(1, 100))) for s in seqs])
        t = time.perf_counter()
        for _ in range(args.steps): bd.forward([(s, [5]) for s in seqs])
        return (time.perf_counter() - t) / args.steps
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(args.rounds):
            r = {B: run(B) for B in args.batches}
            one = args.batches[0] / r[args.batches[0]]
            print(f'{threads} thread(s): ' + '  '.join(f'B={B}: {t * 1000:.1f} ms/step, {B / t:.0f} tok/s ({B / t / one:.2f}x)' for B, t in r.items()), flush=True)


if __name__ == '__main__': main()
