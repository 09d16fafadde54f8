#!/usr/bin/env python
"""Decode speed of `smollm2_nb.generate` against `transformers`' `generate` on CPU (a benchmark, not a test).

Same random weights of the full SmolLM2-135M config in both, batch 1, a 16-token prompt, greedy, 128 new tokens.
Each path is warmed up, then all paths are timed in turn, `--repeats` rounds (round robin, so a burst of load from
other processes on a shared machine hits every path alike); the table shows the median and the best round. `weights MB` is what one decoding step reads, and `GB/s` the
memory traffic that implies: batch-1 decoding is bound by memory bandwidth.

    python benchmarks/bench_generate.py [--threads 2] [--new-tokens 128] [--repeats 3] [--paths fp32,bf16,int8]
"""
from __future__ import annotations
import argparse, copy, os, statistics, time, warnings
import torch
import torch.nn as nn


def weight_bytes(model: nn.Module) -> int:
    "Bytes of weights one decoding step reads: every weight once, the LM head included, the embedding table not (one row)."
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [m.weight() for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]  # torch.ao int8
    embed = model.get_input_embeddings().weight if hasattr(model, 'get_input_embeddings') else model.embed_tokens.weight
    head = getattr(model.lm_head, 'weight', None)
    tied = isinstance(head, torch.Tensor) and head.data_ptr() == embed.data_ptr()
    skip = set() if tied else {embed.data_ptr()}  # a separate LM head is what is read, not the table
    seen, total = set(skip), 0
    for t in tensors:
        if t.data_ptr() in seen: continue
        seen.add(t.data_ptr()); total += t.numel() * t.element_size()
    return total


def tokens_per_sec(fn, n_new: int) -> float:
    t0 = time.perf_counter(); fn(n_new)
    return n_new / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default: 2, this machine)')
    p.add_argument('--new-tokens', type=int, default=128)
    p.add_argument('--prompt-len', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--paths', default='fp32,bf16,int8,int8-dynamic',
                   help='ours: fp32, bf16, int8 (prepare_for_inference), int8-dynamic (torch.ao quantize_dynamic), '
                        'compile-int8 (torch.compile on top of int8; slow to compile)')
    p.add_argument('--no-transformers', action='store_true')
    args = p.parse_args(argv)

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging
    from smollm2_nb.config import SmolLM2Config
    from smollm2_nb.model import SmolLM2
    from smollm2_nb.hf import to_hf_state_dict
    from smollm2_nb.generate import generate
    from smollm2_nb.inference import prepare_for_inference

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    torch.manual_seed(0)
    cfg = SmolLM2Config()
    base = SmolLM2(cfg).eval().requires_grad_(False)
    prompt = torch.randint(1, cfg.vocab_size, (1, args.prompt_len))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, prompt {args.prompt_len} tokens, '
          f'{args.new_tokens} new tokens, greedy, batch 1, best and median of {args.repeats}')

    runners = {}  # name -> (weight bytes, fn(n) generating n tokens)
    if not args.no_transformers:
        hf = LlamaForCausalLM(LlamaConfig(**cfg.to_hf())).eval()
        hf.load_state_dict(to_hf_state_dict(base), strict=False)  # the tied head follows the embedding
        runners['transformers fp32'] = (weight_bytes(hf), lambda n: hf.generate(
            prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0))

    for path in args.paths.split(','):
        if path in ('fp32', 'bf16', 'int8'): m = prepare_for_inference(copy.deepcopy(base), path)
        elif path == 'int8-dynamic':
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # deprecated in torch 2.13; measured for comparison
                from torch.ao.quantization import quantize_dynamic
                m = quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
        elif path == 'compile-int8':
            m = prepare_for_inference(copy.deepcopy(base), 'int8')
            m.forward = torch.compile(m.forward, dynamic=True)
            t0 = time.perf_counter(); generate(m, prompt, 4, temperature=0)
            print(f'compile-int8: compiled in {time.perf_counter() - t0:.0f}s')
        else: raise SystemExit(f'unknown path {path!r}')
        runners[f'ours {path}'] = (weight_bytes(m), lambda n, m=m: generate(m, prompt, n, temperature=0))

    for _, fn in runners.values(): fn(8)  # warmup: allocations, kernel choice
    tps = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, (_, fn) in runners.items(): tps[name].append(tokens_per_sec(fn, args.new_tokens))
    rows = [(name, nbytes, tps[name]) for name, (nbytes, _) in runners.items()]

    ref = statistics.median(rows[0][2]) if not args.no_transformers else None
    ref_best = max(rows[0][2]) if not args.no_transformers else None
    print(f"load average before: {load0}, after: {os.getloadavg()} (other processes share the CPUs)")
    print(f"{'path':20} {'weights MB':>10} {'median tok/s':>12} {'best tok/s':>10} {'x median':>8} {'x best':>7} {'GB/s':>5}")
    for name, nbytes, tps in rows:
        med, best = statistics.median(tps), max(tps)
        ratio = f'{med / ref:8.2f} {best / ref_best:7.2f}' if ref else f"{'':8} {'':7}"
        print(f'{name:20} {nbytes / 1e6:10.0f} {med:12.1f} {best:10.1f} {ratio} {nbytes * best / 1e9:5.1f}')


if __name__ == '__main__':
    main()
