"""Training on prepared (sharded) data: resident memory does not grow with the corpus, and loading is a sliver of a step.

(a) Peak resident memory (VmHWM of /proc/self/status) of a fresh process that sets up a real run (`setup_run`) and
    takes N real training steps (`train_step`) on a 10 MB and on a 1 GB prepared corpus, and their ratio.
(b) The time spent drawing windows and reading them (`BatchSampler.next` + `get_batch`) as a share of the step time.

The corpora are written by this script under --dir (default: a new folder under /tmp, deleted at the end) in the
prepared format (manifest.json + raw uint16 shards) with random token ids, EOS-terminated documents of 1,000 tokens:
random ids change nothing in what is measured (memory and loading time do not depend on the values), and writing them
takes seconds instead of tokenizing a gigabyte of text.
    python benchmarks/bench_data.py                  # full SmolLM2-135M, batch 4 x 256, fp32, 10 steps, CPU
    python benchmarks/bench_data.py --preset tiny --steps 3 --large-mb 100   # quick check
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

DOC = 1000  # tokens per document (the last one is EOS); shards hold whole documents

def write_corpus(d: Path, mb: float, tok_info: dict, shard_tokens: int = 50_000_000, val_share: float = 0.01, seed: int = 0) -> dict:
    "A prepared dataset of about `mb` MB of random token ids at `d`; its manifest."
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = int(mb * 2**20 / 2) // DOC * DOC
    n_val = max(DOC, int(total * val_share) // DOC * DOC)
    splits = {}
    for split, n in (('train', total - n_val), ('val', n_val)):
        shards, left = [], n
        while left:
            k = min(left, shard_tokens // DOC * DOC)
            ids = rng.integers(1, tok_info['vocab_size'], size=k, dtype=np.uint16)
            ids[DOC - 1::DOC] = tok_info['eos_token_id']
            f = f'{split}-{len(shards):06d}.bin'
            ids.astype('<u2').tofile(d / f'{f}.tmp'); os.replace(d / f'{f}.tmp', d / f)
            shards.append(dict(file=f, tokens=k, documents=k // DOC)); left -= k
        splits[split] = dict(tokens=n, documents=n // DOC, shards=shards)
    m = dict(format='smollm2-shards/1', complete=True, dtype='uint16', tokenizer=tok_info,
             source=dict(random_ids=True, seed=seed, note='bench_data.py: random token ids'), val_fraction=val_share,
             shard_tokens=shard_tokens, splits=splits, resume={})
    (d / 'manifest.json.tmp').write_text(json.dumps(m, indent=2)); os.replace(d / 'manifest.json.tmp', d / 'manifest.json')
    return m

def vm(field: str) -> int:
    "A /proc/self/status memory figure in bytes (VmHWM: peak resident set; VmRSS: now)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1]) * 1024
    raise KeyError(field)

def child(a):
    "One measurement, in its own fresh process: set up a run on `a.child`, take `a.steps` training steps, print a JSON line."
    import torch
    from smollm2_nb.train import loop
    from smollm2_nb.train.config import TrainConfig
    rss_import = vm('VmRSS')
    cfg = TrainConfig(data=a.child, preset=a.preset, batch_size=a.batch_size, seq_len=a.seq_len, precision='fp32', steps=a.steps,
                      eval_every=0, sample_every=0, ckpt_every=10**9, out=a.out, progress=False, device='cpu', compile=False)
    run = loop.setup_run(cfg)
    rss_setup = vm('VmRSS')
    data_s = []
    def timed(f):
        def g(*args, **kw):
            t = time.perf_counter(); r = f(*args, **kw); data_s[-1] += time.perf_counter() - t
            return r
        return g
    loop.get_batch, run.sampler.next = timed(loop.get_batch), timed(run.sampler.next)   # what train_step calls for its data
    step_s = []
    for _ in range(a.steps):
        data_s.append(0.0)
        t = time.perf_counter(); loop.train_step(run); step_s.append(time.perf_counter() - t)
    peak = vm('VmHWM')
    loop.finish_run(run, 'finished')
    print(json.dumps(dict(peak_rss=peak, rss_import=rss_import, rss_setup=rss_setup, step_s=step_s, data_s=data_s,
                          train_tokens=run.data.train_tokens, shards=len(run.data.train.arrays), threads=torch.get_num_threads(),
                          loss=run.loss)))

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='smollm2-135m'); p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--seq-len', type=int, default=256); p.add_argument('--steps', type=int, default=10)
    p.add_argument('--small-mb', type=float, default=10); p.add_argument('--large-mb', type=float, default=1024)
    p.add_argument('--dir', help='where to write the corpora (default: a new folder under /tmp, deleted at the end)')
    p.add_argument('--child', help=argparse.SUPPRESS); p.add_argument('--out', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a)

    import torch
    from smollm2_nb.model.tokenizer import load_tokenizer
    from smollm2_nb.run.data import tokenizer_id
    tok = load_tokenizer()
    tok_info = dict(id=tokenizer_id(tok), name=tok.name_or_path, eos_token_id=tok.eos_token_id, vocab_size=len(tok))
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix='smollm2-bench-data-', dir='/tmp'))
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu}), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"{a.preset}, batch {a.batch_size} x {a.seq_len}, fp32, {a.steps} training steps per corpus, each in a fresh process")
    print(f"load average before: {tuple(round(x, 2) for x in os.getloadavg())}")
    results = {}
    try:
        for name, mb in (('small', a.small_mb), ('large', a.large_mb)):
            t = time.time()
            m = write_corpus(root / name, mb, tok_info)
            size = sum(f.stat().st_size for f in (root / name).glob('*.bin'))
            print(f"wrote {name}: {size / 2**20:,.0f} MB, {m['splits']['train']['tokens']:,} train tokens in "
                  f"{len(m['splits']['train']['shards'])} shards + {m['splits']['val']['tokens']:,} val ({time.time() - t:.0f} s)", flush=True)
            r = subprocess.run([sys.executable, __file__, '--child', str(root / name), '--out', str(root / f'run-{name}'),
                                '--preset', a.preset, '--batch-size', str(a.batch_size), '--seq-len', str(a.seq_len), '--steps', str(a.steps)],
                               capture_output=True, text=True)
            if r.returncode: sys.exit(f"measurement on {name} failed:\n{r.stderr[-3000:]}")
            results[name] = dict(json.loads(r.stdout.strip().splitlines()[-1]), mb=size / 2**20)
            shutil.rmtree(root / name)   # the 1 GB corpus lives only as long as its measurement
    finally:
        if not a.dir: shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {tuple(round(x, 2) for x in os.getloadavg())}\n")
    print(f"{'corpus':>10} {'train tokens':>14} {'shards':>6} {'RSS after import':>16} {'RSS after setup':>15} {'peak RSS':>9} "
          f"{'step s (median)':>15} {'data ms/step':>12} {'data share':>10}")
    for name, r in results.items():
        share = sum(r['data_s']) / sum(r['step_s'])
        print(f"{r['mb']:>7,.0f} MB {r['train_tokens']:>14,} {r['shards']:>6} {r['rss_import'] / 2**20:>13,.0f} MB "
              f"{r['rss_setup'] / 2**20:>12,.0f} MB {r['peak_rss'] / 2**20:>6,.0f} MB {statistics.median(r['step_s']):>15.2f} "
              f"{1e3 * statistics.mean(r['data_s']):>12.3f} {share:>10.4%}")
    s, l = results['small'], results['large']
    ratio = l['peak_rss'] / s['peak_rss']
    print(f"\n(a) peak RSS, {l['mb']:,.0f} MB corpus / {s['mb']:,.0f} MB corpus = {ratio:.3f} "
          f"({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10%)")
    worst = max(sum(r['data_s']) / sum(r['step_s']) for r in results.values())
    print(f"(b) data loading (sampler + get_batch): at most {worst:.4%} of the step time "
          f"({'within' if worst <= 0.02 else 'NOT within'} 2%); "
          f"max over steps {1e3 * max(max(r['data_s']) for r in results.values()):.2f} ms")

if __name__ == '__main__': main()
