#!/usr/bin/env python
"""Tokenizing throughput of `smollm2 data prepare` against the tokenizer's own `encode_batch` (a benchmark, not a test).

A corpus of `--mb` MB of JSON lines is made from Tiny Shakespeare (its speeches, numbered so that no two documents are
alike), then tokenized twice with the SmolLM2 tokenizer:

    encode_batch   one process, `tokenizers.Tokenizer.encode_batch` on the same chunks of documents, single-threaded
                   (TOKENIZERS_PARALLELISM=false): the tokenizer alone, nothing read, hashed or written
    prepare        `smollm2_nb.run.prepare.prepare` with `--workers` processes (default: every core), end to end: the
                   JSON lines read and parsed, documents hashed into train/val, shards and manifest written

and prints prepare's tokens/s over (encode_batch's tokens/s x workers): 1.0 would be perfect scaling with no overhead.
Run it at normal priority: other processes on the machine lower both figures (the rounds
are interleaved and the best of each shown). It also prints the CPU seconds each spent: their ratio is prepare's
overhead per token whatever else the machine runs.

    python benchmarks/bench_prepare.py [--mb 40] [--workers N] [--rounds 2]
"""
from __future__ import annotations
import os
os.environ['TOKENIZERS_PARALLELISM'] = 'false'  # the one-process baseline uses one core, before tokenizers is imported
import argparse, json, platform, resource, tempfile, time
from pathlib import Path


def cpu_name() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or 'unknown CPU'


def cpu_s() -> float:
    "CPU seconds (user + system) of this process and of its children that have ended (prepare's workers, once joined)."
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def make_corpus(path: Path, mb: float) -> int:
    "Write `mb` MB of Tiny Shakespeare speeches as JSON lines; return the number of documents."
    from smollm2_nb.run.data import shakespeare_path
    speeches = [s for s in shakespeare_path().read_text().split('\n\n') if s.strip()]
    n, size = 0, 0
    with open(path, 'w') as f:
        while size < mb * 2**20:
            line = json.dumps({'text': f'{n // len(speeches)}. {speeches[n % len(speeches)]}'}) + '\n'
            f.write(line); size += len(line); n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--mb', type=float, default=40, help='corpus size in MB (default: 40)')
    ap.add_argument('--workers', type=int, default=os.cpu_count(), help='prepare workers (default: every core)')
    ap.add_argument('--rounds', type=int, default=2, help='interleaved rounds of each; the best is shown (default: 2)')
    a = ap.parse_args()
    from tokenizers import Tokenizer
    from smollm2_nb.model.tokenizer import load_tokenizer
    from smollm2_nb.run.prepare import chunk_documents, prepare, read_documents, resolve_source
    tok = load_tokenizer()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / 'corpus.jsonl'
        docs = make_corpus(src, a.mb)
        print(f"$ python benchmarks/bench_prepare.py --mb {a.mb:g} --workers {a.workers}   # {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"{cpu_name()}, {os.cpu_count()} CPUs; corpus: {src.stat().st_size / 2**20:.1f} MB of JSON lines, {docs:,} documents; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        chunks = [texts for texts, _ in chunk_documents(read_documents(resolve_source(src)))]
        one = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        base, prep = [], []  # (tokens, wall s, cpu s) per round
        for r in range(a.rounds):  # interleaved, so a burst of load from other processes hits both alike
            c0, t0 = cpu_s(), time.perf_counter()
            n = sum(len(e.ids) + 1 for texts in chunks for e in one.encode_batch(texts, add_special_tokens=False))
            base.append((n, time.perf_counter() - t0, cpu_s() - c0))
            c0, t0 = cpu_s(), time.perf_counter()
            m = prepare(src, Path(d) / f'prepared-{r}', tok, workers=a.workers, progress=False)
            prep.append((m['splits']['train']['tokens'] + m['splits']['val']['tokens'], time.perf_counter() - t0, cpu_s() - c0))
            assert prep[-1][0] == n, (prep[-1][0], n)

    (n, bw, bc), (_, pw, pc) = min(base, key=lambda x: x[1]), min(prep, key=lambda x: x[1])  # each one's best round
    print(f"best of {a.rounds} interleaved rounds:")
    print(f"  encode_batch, 1 process:          {n:,} tokens in {bw:6.2f} s = {n / bw:>10,.0f} tokens/s  (CPU {bc:6.2f} s)")
    print(f"  prepare, {a.workers} workers, end to end:  {n:,} tokens in {pw:6.2f} s = {n / pw:>10,.0f} tokens/s  (CPU {pc:6.2f} s, all processes)")
    print(f"ratio: prepare / (encode_batch x {a.workers}) = {bw / pw / a.workers:.2f}x wall clock; "
          f"CPU per token: encode_batch / prepare = {bc / pc:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == '__main__':
    main()
