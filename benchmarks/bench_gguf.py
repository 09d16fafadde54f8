#!/usr/bin/env python
"""A GGUF file decoded in its own formats (`smollm2_nb.serve.gguf_native`) against llama.cpp on the same file, batch 1 (a
benchmark, not a test): decode tokens/s, first load time, resident memory; optionally the same after a long prompt.

Each measurement runs in a fresh process (`--child`), so that load time and peak resident memory (VmHWM) are those of a
process that loads the file and decodes, nothing else. Ours runs two ways (`--paths`): `lean`, the process without PyTorch
that `smollm2 chat` and `smollm2 generate` run on a GGUF file (`smollm2_nb.serve.lean.LeanModel`: the step built as a plain
shared library), and `torch`, the same step inside a PyTorch process (`load_for_inference(file, 'auto', 'cpu')`, as the
server and the app load it); both the file's own blocks, nothing converted or written. llama.cpp is `llama_cpp.Llama`
with its defaults (f16 KV cache, weight repacking on). All with `--threads` threads. Greedy, a 16-token prompt (Tiny Shakespeare), `--new-tokens` new tokens
timed after 8 warm-up tokens; the prompt and first token timed apart. Our classes (`--isas`, default every class this
CPU runs) and llama.cpp are run in turn for `--repeats` rounds, round robin, so a burst of load from other processes on
a shared machine hits every path alike; the table shows medians and each of our rows' ratio to llama.cpp's.

    python benchmarks/bench_gguf.py [--model official] [--threads 2] [--new-tokens 128] [--repeats 3] [--isas avx2,avx512]
        [--paths lean,torch] [--prompt-len 2000] [--kv fp16,fp32]

`--model` takes any GGUF file the step reads in its own blocks, e.g. the official file requantized to Q4_K_M by
llama.cpp's quantizer (`llama_cpp.llama_model_quantize` with `allow_requantize`): Q5_0, Q8_0, Q4_K and Q6_K matrices.

llama.cpp runs as llama-cpp-python was built here (natively: every instruction set of this CPU); for llama.cpp held to
a class, put a build made for it first on the path (see benchmarks/bench_generate.py). `--prompt-len 2000` measures
decoding deep into a context (the new tokens after a 2,000-token prompt), where reading the KV cache adds to the weights;
`--kv fp16,fp32` runs each of our classes with its KV cache in both (ours keeps fp16 for a quantized model, as llama.cpp).
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path


def resident_mb() -> tuple[float, float]:
    "(VmRSS, VmHWM) of this process in MB."
    f = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM'))}
    return int(f['VmRSS']) / 1024, int(f['VmHWM']) / 1024


def prompt_ids(n: int) -> list[int]:
    "n tokens of Tiny Shakespeare (the SmolLM2 tokenizer: the official file's own)."
    from smollm2_nb.model.tokenizer import load_tokenizer
    from smollm2_nb.run.data import shakespeare_path
    ids = load_tokenizer()(shakespeare_path().read_text()[:20 * n + 2000])['input_ids']
    return (ids * (n // len(ids) + 1))[:n]


def child(spec: str, model: str, prompt: list[int], new: int, threads: int) -> dict:
    "In a fresh process: load, then time the prompt + first token and `new` more greedy tokens; resident memory after."
    if spec == 'llama':                # llama.cpp alone in its process: no torch, as a llama.cpp user runs it
        import llama_cpp, numpy as np
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(model_path=model, n_ctx=len(prompt) + new + 16, n_threads=threads, n_threads_batch=threads, verbose=False)
        load = time.perf_counter() - t0
        # the last position's logits from llama.cpp itself (llm.scores keeps n_batch rows without logits_all)
        last = lambda: int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))))
        t0 = time.perf_counter(); llm.reset(); llm.eval(prompt); tok = last(); first = time.perf_counter() - t0
        for _ in range(8): llm.eval([tok]); tok = last()
        t0 = time.perf_counter()
        for _ in range(new): llm.eval([tok]); tok = last()
        decode = new / (time.perf_counter() - t0)
        info = llama_cpp.llama_print_system_info().decode()
        isa = [' '.join(f.split('=')[0].strip() for f in info.split('|') if f.strip().endswith('= 1') and 'AVX' in f), 'file as is']
    elif spec.startswith('lean:'):     # no PyTorch in this process: what `smollm2 chat` and `generate` run on a GGUF file
        import numpy as np
        spec, _, kv = spec[5:].partition('@')
        os.environ['SMOLLM2_CPU_ISA'] = spec
        from smollm2_nb.serve.lean import LeanModel
        t0 = time.perf_counter()
        m = LeanModel(model, isa=spec, threads=threads)
        load = time.perf_counter() - t0
        if kv: m.kv_dtype = {'fp32': np.float32, 'fp16': np.float16}[kv]
        t0 = time.perf_counter(); logits, step = m.start(prompt, len(prompt) + new + 16); tok = int(np.argmax(logits))
        first = time.perf_counter() - t0
        for _ in range(8): tok = int(np.argmax(step(tok)))
        t0 = time.perf_counter()
        for _ in range(new): tok = int(np.argmax(step(tok)))
        decode = new / (time.perf_counter() - t0)
        assert 'torch' not in sys.modules
        isa = [m.isa, '+'.join(t.lower() for t in m.types) + f', {np.dtype(m.kv_dtype).name} KV, no PyTorch']
    else:
        import torch
        torch.set_num_threads(threads)
        spec, _, kv = spec.partition('@')   # 'avx2@fp32': the class, then the KV cache's dtype (default: the decoder's own)
        os.environ['SMOLLM2_CPU_ISA'] = spec
        from smollm2_nb.serve.load import load_for_inference
        t0 = time.perf_counter()
        m, tok_, info = load_for_inference(model, 'auto', 'cpu')
        load = time.perf_counter() - t0
        dec = info['decoder']
        if kv: dec.kv_dtype = {'fp32': torch.float32, 'fp16': torch.float16}[kv]
        with torch.inference_mode():
            t0 = time.perf_counter(); logits, step = dec.start(torch.tensor([prompt]), len(prompt) + new + 16)
            tok = logits.argmax(-1); first = time.perf_counter() - t0
            for _ in range(8): tok = step(tok).argmax(-1)
            t0 = time.perf_counter()
            for _ in range(new): tok = step(tok).argmax(-1)
            decode = new / (time.perf_counter() - t0)
        isa = [dec.isa, info['serving'] + f', {str(dec.kv_dtype)[6:]} KV']
    rss, hwm = resident_mb()
    return dict(load_s=load, first_s=first, decode=decode, rss=rss, hwm=hwm, isa=isa)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='official', help="a GGUF file, e.g. a Q4_K_M one (default: the official SmolLM2-135M-Instruct Q4_1)")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--new-tokens', type=int, default=128)
    p.add_argument('--prompt-len', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--isas', default=None, help='classes of our step, comma-separated (default: every class this CPU runs)')
    p.add_argument('--paths', default='lean,torch', help="ours without PyTorch (lean: the command line's), inside PyTorch (torch: the server's), or both")
    p.add_argument('--kv', default=None, help="our KV cache: fp16, fp32 or both ('fp16,fp32'; default: the decoder's own, fp16)")
    p.add_argument('--no-llama-cpp', action='store_true')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    model = args.model
    if model == 'official':
        from smollm2_nb.serve.gguf_source import official_gguf
        model = str(official_gguf())
    if args.child:
        print(json.dumps(child(args.child, model, json.loads(os.environ['BENCH_PROMPT']), args.new_tokens, args.threads)))
        return 0
    from smollm2_nb.serve.decoders import cpu_isas
    isas = args.isas.split(',') if args.isas else [i for i in cpu_isas()]
    isas = [f'{i}@{kv}' for i in isas for kv in args.kv.split(',')] if args.kv else isas
    paths = args.paths.split(',')
    specs = [f'lean:{i}' for i in isas if 'lean' in paths] + [i for i in isas if 'torch' in paths] + ([] if args.no_llama_cpp else ['llama'])
    prompt = prompt_ids(args.prompt_len)
    env = {**os.environ, 'BENCH_PROMPT': json.dumps(prompt), 'OMP_NUM_THREADS': str(args.threads)}
    cmd = lambda s: [sys.executable, __file__, '--child', s, '--model', model, '--threads', str(args.threads), '--new-tokens', str(args.new_tokens)]
    for s in specs:   # warm up: builds our step for each class (cached), pages the file in
        subprocess.run(cmd(s), env=env, capture_output=True, text=True, check=True)
    runs = {s: [] for s in specs}
    for r in range(args.repeats):
        for s in specs:
            out = subprocess.run(cmd(s), env=env, capture_output=True, text=True)
            if out.returncode: raise SystemExit(f'{s}: {out.stderr[-2000:]}')
            runs[s].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {s: {k: statistics.median(r[k] for r in v) for k in ('load_s', 'first_s', 'decode', 'rss', 'hwm')} for s, v in runs.items()}
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    fam = {l.split(':')[0].strip(): l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if ':' in l}
    print(f"# {Path(model).name} ({Path(model).stat().st_size / 1e6:.0f} MB), {cpu} (family {fam.get('cpu family')} model {fam.get('model')}), "
          f"{args.threads} threads, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"# prompt {args.prompt_len} tokens, {args.new_tokens} new tokens greedy, median of {args.repeats} rounds (round robin, a fresh process each)")
    if 'llama' in runs: print(f"# llama.cpp: llama-cpp-python {__import__('llama_cpp').__version__}, built natively here ({runs['llama'][0]['isa'][0]}), its defaults")
    print(f"{'path':<56}{'decode tok/s':>13}{'x llama.cpp':>12}{'first token s':>15}{'load s':>8}{'peak RSS MB':>13}{'x llama.cpp':>12}{'RSS after MB':>14}")
    ref = med.get('llama')
    for s, m in med.items():
        name = 'llama.cpp' if s == 'llama' else f"ours {s.split('@')[0].removeprefix('lean:')} ({runs[s][0]['isa'][1]})"
        rd = f"{m['decode'] / ref['decode']:.2f}x" if ref else ''
        rm = f"{m['hwm'] / ref['hwm']:.2f}x" if ref else ''
        print(f"{name:<56}{m['decode']:>13.1f}{rd:>12}{m['first_s']:>15.3f}{m['load_s']:>8.2f}{m['hwm']:>13.0f}{rm:>12}{m['rss']:>14.0f}")
    print('# rounds: ' + '; '.join(f"{s}: " + ', '.join(f"{r['decode']:.1f}" for r in v) for s, v in runs.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
