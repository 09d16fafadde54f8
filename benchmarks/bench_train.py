"""Training throughput of smollm2_nb's SmolLM2 vs transformers' LlamaForCausalLM with the same config.

Both models: same config (default: the full SmolLM2-135M), same batch, same precision, same AdamW, on the same device;
steps are interleaved (ours, theirs, then theirs, ours, ...) so a machine shared with other work slows both alike, and
the ratio is also given as the median over rounds of (their step time / our step time), the figure least moved by load.
    python benchmarks/bench_train.py                         # CPU, 135M, batch 4 x 256, fp32, 5 timed steps each
    python benchmarks/bench_train.py --preset tiny --steps 5 # quick check
"""
from __future__ import annotations
import argparse, statistics, time
import torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2, NextTokenLoss
from smollm2_nb.train.loop import make_optimizer
from smollm2_nb.model.precision import autocast_ctx, choose_precision

def hf_model(cfg):
    from transformers import LlamaConfig, LlamaForCausalLM
    m = LlamaForCausalLM(LlamaConfig(**cfg.to_hf(), attn_implementation='sdpa'))
    return m

def step_fn(model, opt, x, y, ctx, ours: bool):
    def step():
        with ctx:
            loss = NextTokenLoss(model)(x, y) if ours else model(input_ids=x, labels=y).loss  # HF shifts labels itself: it gets x
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss.item()
    return step

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='smollm2-135m'); p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--seq-len', type=int, default=256); p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1); p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--precision', default='auto')
    a = p.parse_args()
    dev = torch.device(a.device)
    precision = choose_precision(dev.type, torch.cuda.get_device_capability(dev) if dev.type == 'cuda' else None, a.precision)
    ctx = autocast_ctx(dev.type, precision)
    cfg = get_config(a.preset)
    torch.manual_seed(0)
    ours = SmolLM2(cfg).to(dev)
    theirs = hf_model(cfg).to(dev)
    theirs.load_state_dict({'model.' + k if not k.startswith('lm_head') else k: v for k, v in ours.state_dict().items()}, strict=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (a.batch_size, a.seq_len + 1), generator=g).to(dev)
    x, y = ids[:, :-1], ids[:, 1:]
    steps = {'smollm2_nb': step_fn(ours, make_optimizer(ours, 1e-4, 0.1, dev.type), x, y, ctx, True),
             # HF shifts labels itself: give it the inputs as labels, it predicts ids[1:] from ids[:-1] like ours
             'transformers': step_fn(theirs, make_optimizer(theirs, 1e-4, 0.1, dev.type), x, x, ctx, False)}
    times, first_loss = {k: [] for k in steps}, {}
    for i in range(a.warmup + a.steps):
        for name, f in (list(steps.items()) if i % 2 == 0 else list(steps.items())[::-1]):  # alternate who goes first
            if dev.type == 'cuda': torch.cuda.synchronize(dev)
            t = time.perf_counter(); loss = f()
            first_loss.setdefault(name, loss)
            if dev.type == 'cuda': torch.cuda.synchronize(dev)
            if i >= a.warmup: times[name].append(time.perf_counter() - t)
    tokens = a.batch_size * a.seq_len
    n = sum(p.numel() for p in ours.parameters())
    print(f"{a.preset} ({n/1e6:.1f}M params), batch {a.batch_size} x {a.seq_len}, {precision} on {dev}, torch threads {torch.get_num_threads()}, "
          f"{a.steps} timed steps each (after {a.warmup} warmup), interleaved")
    tps, best = {}, {}
    for name, ts in times.items():
        tps[name], best[name] = tokens / (sum(ts) / len(ts)), tokens / min(ts)
        print(f"  {name:<13} {tps[name]:8.1f} tokens/s mean, {best[name]:8.1f} best step   first loss {first_loss[name]:.4f}  "
              f"(step times: {', '.join(f'{t:.2f}s' for t in ts)})")
    print(f"  ratio smollm2_nb / transformers = {tps['smollm2_nb'] / tps['transformers']:.2f} (mean), "
          f"{best['smollm2_nb'] / best['transformers']:.2f} (best step), "
          f"{statistics.median(t / o for o, t in zip(times['smollm2_nb'], times['transformers'])):.2f} (median of the rounds' ratios)")

if __name__ == '__main__': main()
