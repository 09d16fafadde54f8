"""The app's requests through the shared scheduler: concurrent `gradio_client` calls are decoded together (each the text it
gets alone), and a full queue tells the user the app is busy."""
from __future__ import annotations
import socket, time
from concurrent.futures import ThreadPoolExecutor
import pytest

pytest.importorskip('gradio')
from gradio_client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    import torch
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.arch import SmolLM2
    from smollm2_nb.model.hf import save_pretrained
    from smollm2_nb.model.tokenizer import load_tokenizer
    torch.manual_seed(0)
    return save_pretrained(SmolLM2(get_config('tiny')), tmp_path_factory.mktemp('app') / 'tiny', tokenizer=load_tokenizer())


def served(slot, concurrency):
    from smollm2_nb.serve.app import build_app
    demo = build_app(slot, concurrency=concurrency)
    _, url, _ = demo.launch(server_name='127.0.0.1', server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, Client(url, verbose=False)


def test_concurrent_users_are_batched_and_get_their_own_text(tiny_folder):
    from smollm2_nb.serve.app import ModelSlot, check_settings
    slot = ModelSlot(tiny_folder, max_batch=4)
    prompts = ['ROMEO:', 'JULIET:', 'KING RICHARD II:', 'To be or not to be']
    alone = [slot.generate(p, **check_settings(p, 40, 0, 50, 0.95, 1.0)) for p in prompts]   # one at a time
    forward = slot.scheduler.decoder.forward
    slot.scheduler.decoder.forward = lambda *a, **k: (time.sleep(0.01), forward(*a, **k))[1]   # steps slow enough to overlap
    demo, client = served(slot, 4)
    try:
        with ThreadPoolExecutor(4) as pool:
            jobs = [client.submit(p, 40, 0, 50, 0.95, 1.0, api_name='/generate') for p in prompts]
            got = [j.result(timeout=120) for j in jobs]
    finally: demo.close()
    assert got == alone
    assert slot.scheduler.stats['max_running'] >= 2     # decoded together, not one after another


def test_a_full_queue_says_the_app_is_busy(tiny_folder):
    from smollm2_nb.serve.app import ModelSlot
    slot = ModelSlot(tiny_folder, max_batch=1, max_queue=0)
    forward = slot.scheduler.decoder.forward
    slot.scheduler.decoder.forward = lambda *a, **k: (time.sleep(0.02), forward(*a, **k))[1]
    demo, client = served(slot, 4)
    try:
        long = client.submit('ROMEO:', 300, 0.8, 50, 0.95, 1.0, api_name='/generate')
        t0 = time.monotonic()
        while slot.scheduler.load[0] == 0 and time.monotonic() < t0 + 60: time.sleep(0.05)
        assert slot.scheduler.load[0] == 1, 'the first request never started'
        with pytest.raises(Exception, match='busy'):
            client.submit('JULIET:', 10, 0.8, 50, 0.95, 1.0, api_name='/generate').result(timeout=60)
        print(f'busy after {time.monotonic() - t0:.1f} s')
        assert long.result(timeout=120).startswith('ROMEO:')                     # the running one was not disturbed
        assert client.submit('JULIET:', 10, 0.8, 50, 0.95, 1.0, api_name='/generate').result(timeout=60).startswith('JULIET:')
    finally: demo.close()
