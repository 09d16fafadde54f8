"""The Gradio app end to end: `smollm2 app` serving a tiny model, called through gradio_client and a real browser."""
from __future__ import annotations
import os, shutil, socket, subprocess, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / 'artifacts'
CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
STARTUP_S, CALL_S = 180, 120  # bounds on every wait

pytest.importorskip('gradio')
from gradio_client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen | None = None, timeout: float = STARTUP_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'the app exited with {proc.returncode}:\n{proc.stdout.read()}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f'the app did not answer at {url} within {timeout}s')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory) -> Path:
    "A tiny random SmolLM2 saved as a Hugging Face folder with the SmolLM2 tokenizer."
    import torch
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.arch import SmolLM2
    from smollm2_nb.model.hf import save_pretrained
    from smollm2_nb.model.tokenizer import load_tokenizer
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp('model') / 'tiny'
    save_pretrained(SmolLM2(get_config('tiny')), out, tokenizer=load_tokenizer())
    return out


@pytest.fixture(scope='module')
def server(tiny_model):
    "`smollm2 app --model <tiny> --port <free>` in a subprocess; its URL. Shut down at the end."
    port = free_port()
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
           'GRADIO_ANALYTICS_ENABLED': 'False', 'TOKENIZERS_PARALLELISM': 'false'}
    cmd = [sys.executable, '-c', 'import sys; from smollm2_nb.cli import main; sys.exit(main(sys.argv[1:]))',
           'app', '--model', str(tiny_model), '--host', '127.0.0.1', '--port', str(port), '--concurrency', '2']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(timeout=10)


@pytest.fixture(scope='module')
def client(server):
    return Client(server, verbose=False)


def generate(client, prompt, max_new_tokens=20, temperature=0, top_k=50, top_p=0.95, repetition_penalty=1.0):
    job = client.submit(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, api_name='/generate')
    return job.result(timeout=CALL_S)


def test_generate_api(client):
    text = generate(client, 'ROMEO:')
    assert text.startswith('ROMEO:') and len(text) > len('ROMEO:')
    assert generate(client, 'ROMEO:') == text  # temperature 0 is greedy: the same text again
    sampled = generate(client, 'Once upon a time', 30, 0.9, 40, 0.9, 1.2)
    assert sampled.startswith('Once upon a time')


@pytest.mark.parametrize('args, message', [
    (('',), 'prompt is empty'),
    (('ROMEO:', 5000), 'max_new_tokens=5000 is out of range'),
    (('ROMEO:', 20, 3.5), 'temperature=3.5 is out of range'),
    (('ROMEO:', 20, 0.8, 0), 'top_k=0 is out of range'),
    (('ROMEO:', 20, 0.8, 50, 1.5), 'top_p=1.5 is out of range'),
    (('ROMEO:', 20, 0.8, 50, 0.9, 0.2), 'repetition_penalty=0.2 is out of range'),
    (('to be or not ' * 400, 100), "does not fit the model's max_position_embeddings"),  # longer than the context
    (('to be ' * 480, 100), 'exceeds the model.s max_position_embeddings'),  # fits, but not with 100 more tokens
])
def test_bad_input_is_an_error_and_the_app_keeps_serving(client, args, message):
    with pytest.raises(Exception, match=message):
        generate(client, *args)
    assert generate(client, 'KING RICHARD II:', 10).startswith('KING RICHARD II:')


def test_concurrent_users_are_queued(client, server):
    prompts = ['ROMEO:', 'KING RICHARD II:', 'Once upon a time', 'To be or not to be', 'JULIET:', 'HAMLET:']
    clients = [Client(server, verbose=False) for _ in prompts]
    with ThreadPoolExecutor(len(prompts)) as ex:
        texts = list(ex.map(lambda cp: generate(cp[0], cp[1], 30), zip(clients, prompts)))
    assert [t[:len(p)] for t, p in zip(texts, prompts)] == prompts


def test_stream_endpoint_yields_token_by_token(client):
    job = client.submit('ROMEO:', 15, 0.8, True, 50, 0.95, 1.0, api_name='/stream')
    final = job.result(timeout=CALL_S)
    updates = job.outputs()
    assert len(updates) > 2 and final == updates[-1] and final.startswith('ROMEO:')
    assert all(updates[-1].startswith(u) for u in updates)  # each update extends the last


def test_no_model_says_how_to_load_one(monkeypatch):
    from smollm2_nb.serve.app import build_app, MODEL_ENV
    monkeypatch.delenv(MODEL_ENV, raising=False)
    demo = build_app()
    _, url, _ = demo.launch(server_name='127.0.0.1', server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with pytest.raises(Exception, match=r'\$SMOLLM2_MODEL'):
            generate(Client(url, verbose=False), 'ROMEO:')
    finally: demo.close()


def test_load_model_control_loads_a_training_run(client, tiny_model, tmp_path):
    "'Load model' on a trainer run dir swaps the model and fills the model card; a bad source is an error, not a crash."
    import torch
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.arch import SmolLM2
    from smollm2_nb.run.checkpoint import Checkpoint, save_checkpoint
    torch.manual_seed(1)
    model = SmolLM2(get_config('tiny'))
    save_checkpoint(Checkpoint(step=7, config=model.config.to_dict(), model=model.state_dict(), val_loss=4.25,
                     precision='fp32', tokenizer=os.environ.get('SMOLLM2_TOKENIZER')), tmp_path / 'run')
    card = client.submit(str(tmp_path / 'run'), api_name='/ui_load').result(timeout=CALL_S)
    assert '| training step | 7 |' in card and '4.2500' in card and '| kind | checkpoint |' in card
    assert generate(client, 'ROMEO:', 10).startswith('ROMEO:')
    with pytest.raises(Exception, match='Could not load'):
        client.submit(str(tmp_path / 'no-such-run'), api_name='/ui_load').result(timeout=CALL_S)
    card = client.submit(str(tiny_model), api_name='/ui_load').result(timeout=CALL_S)  # back to the HF folder
    assert '| kind | hf_folder |' in card


def test_space_entry_point(tiny_model, monkeypatch):
    "app/app.py serves $SMOLLM2_MODEL with no way for a visitor to swap it; README and requirements make it a Space."
    import runpy
    monkeypatch.setenv('SMOLLM2_MODEL', str(tiny_model))
    monkeypatch.setenv('SPACE_ID', 'someone/smollm2')          # what a Space sets: the app is public
    monkeypatch.delenv('SMOLLM2_ALLOWED_MODELS', raising=False)
    demo = runpy.run_path(str(ROOT / 'app' / 'app.py'), run_name='space')['demo']  # not __main__: built, not launched
    _, url, _ = demo.launch(server_name='127.0.0.1', server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        space = Client(url, verbose=False)
        assert generate(space, 'To be or not to be', 10).startswith('To be or not to be')
        with pytest.raises(Exception): space.submit(str(tiny_model), api_name='/ui_load').result(timeout=CALL_S)
    finally: demo.close()
    readme = (ROOT / 'app' / 'README.md').read_text()
    front = dict(l.split(': ', 1) for l in readme.split('---')[1].strip().splitlines())
    assert front['sdk'] == 'gradio' and front['app_file'] == 'app.py' and (ROOT / 'app' / front['app_file']).exists()
    assert 'smollm2_nb' in (ROOT / 'app' / 'requirements.txt').read_text()


def _launch(demo):
    _, url, _ = demo.launch(server_name='127.0.0.1', server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return url

def _error(job) -> str:
    with pytest.raises(Exception) as e: job.result(timeout=CALL_S)
    return str(e.value)

def test_public_app_offers_no_load_endpoint_and_no_paths(tiny_model, tmp_path, monkeypatch):
    "Public (a Space, a non-local address): no load control or endpoint; a broken model is reported without path or content."
    from smollm2_nb.serve.app import build_app
    monkeypatch.delenv('SMOLLM2_ALLOWED_MODELS', raising=False)
    secret = tmp_path / 'secret.pt'
    secret.write_text('root:x:0:0:the first bytes of a private file')
    demo = build_app(str(secret), public=True)
    url = _launch(demo)
    try:
        c = Client(url, verbose=False)
        assert '/ui_load' not in str(c.view_api(print_info=False, return_format='dict'))
        with pytest.raises(Exception): c.submit(str(tiny_model), api_name='/ui_load').result(timeout=CALL_S)
        page = urllib.request.urlopen(url + 'config', timeout=30).read().decode()
        assert 'Could not load the configured model' in page
        assert str(tmp_path) not in page and 'root:x' not in page and 'secret' not in page
    finally: demo.close()

def test_public_app_loads_only_allowlisted_sources(tiny_model, tmp_path):
    "With an allowlist, a public app loads those sources and refuses anything else without echoing it."
    from smollm2_nb.serve.app import build_app
    demo = build_app(str(tiny_model), public=True, allowed=[str(tiny_model)])
    url = _launch(demo)
    try:
        c = Client(url, verbose=False)
        assert '| kind | hf_folder |' in c.submit(str(tiny_model), api_name='/ui_load').result(timeout=CALL_S)
        probes = ['/etc/passwd', str(tmp_path / 'nothing-here')]      # a file that exists, and one that does not
        messages = [_error(c.submit(probe, api_name='/ui_load')).replace(probe, 'PROBE') for probe in probes]
        assert messages[0] == messages[1]                               # refused alike: no way to learn what exists
        assert 'root:' not in messages[0]                               # and no file content
    finally: demo.close()

def test_new_pages_show_the_model_served_now(tiny_model, tmp_path):
    "After 'Load model', a page opened later shows the new model's card, not the one the app started with."
    import torch
    from smollm2_nb.serve.app import build_app
    from smollm2_nb.run.checkpoint import Checkpoint, save_checkpoint
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.arch import SmolLM2
    model = SmolLM2(get_config('tiny'))
    save_checkpoint(Checkpoint(step=11, config=model.config.to_dict(), model=model.state_dict(), val_loss=3.5,
                     tokenizer=os.environ.get('SMOLLM2_TOKENIZER')), tmp_path / 'run')
    demo = build_app(str(tiny_model), public=False)
    url = _launch(demo)
    try:
        Client(url, verbose=False).submit(str(tmp_path / 'run'), api_name='/ui_load').result(timeout=CALL_S)
        load_fns = [b for b in demo.fns.values() if any(t[1] == 'load' for t in b.targets)]
        assert load_fns, 'the app must refresh the model card when a page loads'
        card = load_fns[0].fn()
        assert '| training step | 11 |' in card and '| kind | checkpoint |' in card
    finally: demo.close()


def test_cli_help(capsys):
    from smollm2_nb.cli import main
    with pytest.raises(SystemExit) as e: main(['app', '--help'])
    assert e.value.code == 0 and '--model' in capsys.readouterr().out


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (apt-get install chromium)')
def test_browser_generates_and_shows_text(server, tiny_model):
    from playwright.sync_api import sync_playwright, expect
    ARTIFACTS.mkdir(exist_ok=True)
    args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run']
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, timeout=60_000)
        try:
            page = browser.new_page(viewport={'width': 1280, 'height': 900})
            page.set_default_timeout(60_000)
            page.goto(server, wait_until='domcontentloaded')
            expect(page.locator('#model-card')).to_contain_text('parameters', timeout=60_000)
            output = page.locator('#output textarea')

            def set_max_new_tokens(n):
                box = page.locator('#max-new-tokens input[type=number]')
                box.fill(str(n)); box.press('Enter')

            def wait_stable(ms=1500):
                "the output text once it has not changed for `ms` (the stream ended)"
                deadline, last = time.monotonic() + CALL_S, None
                while time.monotonic() < deadline:
                    value = output.input_value()
                    if value == last and value: return value
                    last = value; page.wait_for_timeout(ms)
                raise TimeoutError('the output kept changing')

            def wait_for_output(prefix, min_len):
                page.wait_for_function("""([p, n]) => { const t = document.querySelector('#output textarea');
                                                       return t && t.value.startsWith(p) && t.value.length > n; }""",
                                       arg=[prefix, min_len], timeout=CALL_S * 1000)

            # type a prompt, click Generate, see the text stream in
            set_max_new_tokens(40)
            page.locator('#prompt textarea').fill('ROMEO:')
            page.locator('#generate').click()
            wait_for_output('ROMEO:', 20)
            text = wait_stable()
            page.screenshot(path=str(ARTIFACTS / 'app.png'), full_page=True)
            assert text.startswith('ROMEO:') and len(text) > 20

            # Stop ends a long generation: the text stops growing
            set_max_new_tokens(500)
            page.locator('#prompt textarea').fill('Once upon a time')
            page.locator('#generate').click()
            wait_for_output('Once upon a time', 30)
            page.locator('#stop').click()
            stopped = wait_stable()
            page.wait_for_timeout(1500)
            assert output.input_value() == stopped and stopped.startswith('Once upon a time')

            # an empty prompt shows an error, and the page keeps working
            page.locator('#prompt textarea').fill('')
            page.locator('#generate').click()
            expect(page.get_by_text('prompt is empty').first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / 'app_error.png'), full_page=True)
            # an example prompt fills the prompt box; Greedy greys out the sampling sliders it overrides
            set_max_new_tokens(20)
            page.get_by_text('To be or not to be', exact=True).click()
            expect(page.locator('#prompt textarea')).to_have_value('To be or not to be', timeout=10_000)
            page.get_by_label('Greedy', exact=False).check()
            expect(page.locator('#temperature input[type=range]')).to_be_disabled(timeout=10_000)
            page.locator('#generate').click()
            wait_for_output('To be or not to be', 25)
        finally: browser.close()
