#!/usr/bin/env python
"""The C++ decoding step of an earlier revision against the working tree's, in one process (a benchmark, not a test).

A change to the step's kernels is worth a few percent at most on a memory-bound batch-1 step, and a virtual machine's
memory bandwidth drifts more than that between runs (llama.cpp's own f32 decoding measured 35.8 and 44.3 tokens/s half
an hour apart on the same EPYC). So both builds decode here side by side: the same random SmolLM2-135M weights
converted once per precision, each build with its own packed copy and KV cache, `--rounds` rounds of `--tokens`
tokens, the order alternating between rounds. It prints each build's median tokens/s and the median of the per-round
ratios; a precision whose kernel did not change is the control (its ratio shows the noise).
Where the scales' layout changed (int8: one fp32 scale per row until its bf16 scales per block of 64), the earlier
build gets the layout it reads, so each build reads its own bytes; its logits are then not the model's.

    python benchmarks/bench_step_ab.py --before HEAD~1 [--precisions fp32,bf16,int8] [--rounds 15] [--isa avx2]
"""
import argparse, copy, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]


def build_at(rev: str, isa: str, flags: list[str]):
    "The step as the sources stood at git revision `rev` (the .cpp and any header beside it), compiled for `isa`."
    from torch.utils.cpp_extension import load
    csrc = 'smollm2_nb/serve/csrc'
    names = subprocess.run(['git', 'ls-tree', '--name-only', f'{rev}:{csrc}'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    d = Path(tempfile.mkdtemp(prefix='step_ab_'))
    for n in names: (d / n).write_bytes(subprocess.run(['git', 'show', f'{rev}:{csrc}/{n}'], cwd=ROOT, capture_output=True, check=True).stdout)
    sha = subprocess.run(['git', 'rev-parse', '--short', rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return sha, load(f'smollm2_step_ab_{isa}_{sha}', sources=[str(d / 'cpu_decode.cpp')], extra_cflags=['-O3', '-fopenmp', *flags],
                extra_ldflags=['-fopenmp'])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--before', default='HEAD~1', help='git revision of the step to compare against (default: HEAD~1)')
    p.add_argument('--precisions', default='fp32,bf16,int8')
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--tokens', type=int, default=48, help='tokens decoded per round and build')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--isa', help='class to build both as (default: the fastest this CPU runs)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from smollm2_nb.model.arch import SmolLM2
    from smollm2_nb.model.config import get_config
    from smollm2_nb.serve import decoders as D
    isa = args.isa or D.cpu_isa()
    if isa is None: sys.exit('bench_step_ab: no class of the C++ step runs here')
    (sha, before), after = build_at(args.before, isa, D.CPU_ISAS[isa][0]), D.cpu_decode_kernels(isa)
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), 'unknown') if os.path.exists('/proc/cpuinfo') else 'unknown'
    print(f'CPU: {cpu}; class {isa}; {args.threads} threads; step at {args.before} = {sha} (before) vs the working tree (after); '
          f'{args.rounds} rounds of {args.tokens} tokens, random SmolLM2-135M weights', flush=True)
    torch.manual_seed(0)
    base = SmolLM2(get_config('smollm2-135m')).eval()
    for mode in args.precisions.split(','):
        m, _ = D.prepare_for_inference(copy.deepcopy(base), mode)
        steps = {}
        for name, kernels in (('before', before), ('after', after)):
            dec, prompt = D.CPUDecoder(m, kernels), torch.randint(0, 49152, (1, 16))
            dec.prefill_up_to = dict.fromkeys(dec.prefill_up_to, 0)   # the prompt through the model: an earlier build may have no C++ prefill
            _, steps[name] = dec.start(prompt, 16 + args.tokens * (args.rounds + 1))
            try: steps[name](torch.tensor([7]))
            except RuntimeError:   # a revision before int8's bf16 block scales reads one fp32 scale per row: give it that
                dec.scales = [s[:, 0].float().contiguous() if s.numel() else s for s in dec.scales]   # (its logits differ; its bytes are its own)
                _, steps[name] = dec.start(prompt, 16 + args.tokens * (args.rounds + 1))
        rates = {'before': [], 'after': []}
        for r in range(args.rounds):
            for name in (('before', 'after') if r % 2 == 0 else ('after', 'before')):
                tok, t = torch.tensor([7]), time.perf_counter()
                for _ in range(args.tokens): tok = steps[name](tok).argmax(-1)
                rates[name].append(args.tokens / (time.perf_counter() - t))
        b, a = statistics.median(rates['before']), statistics.median(rates['after'])
        per_round = statistics.median(y / x for x, y in zip(rates['before'], rates['after']))
        print(f'{mode:>5}: before {b:6.1f} tok/s, after {a:6.1f} tok/s (medians); after / before {a / b:.2f}x, '
              f'median of the per-round ratios {per_round:.2f}x', flush=True)
        del steps, m


if __name__ == '__main__': main()
