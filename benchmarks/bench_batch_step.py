"""The batched C++ step alone (`BatchDecoder.forward`, no server): ms per step and tokens/s for B sequences decoding
together, against B = 1, with 2 and 1 torch threads, the official SmolLM2-135M-Instruct weights (int8 through the step).

    python benchmarks/bench_batch_step.py [--batches 1 8 16] [--steps 16] [--rounds 2]"""
from __future__ import annotations
import argparse, os, time
import torch
from bench_serve import cpu_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batches', type=int, nargs='+', default=[1, 8, 16])
    p.add_argument('--steps', type=int, default=16)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--threads', type=int, nargs='+', default=[2, 1])
    args = p.parse_args(argv)
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
