"The app's Chat tab through its `/chat` endpoint (gradio_client), with a tiny model whose tokenizer has a chat template, and with one that has none."
from __future__ import annotations
import socket
import pytest

pytest.importorskip('gradio')
from gradio_client import Client

CHATML = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def tiny_folder(path, chat_template=None):
    import torch
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.arch import SmolLM2
    from smollm2_nb.model.hf import save_pretrained
    from smollm2_nb.model.tokenizer import load_tokenizer
    tok = load_tokenizer()
    tok.chat_template = chat_template
    torch.manual_seed(0)
    return save_pretrained(SmolLM2(get_config('tiny')), path, tokenizer=tok)


def served(folder):
    from smollm2_nb.serve.app import build_app, ModelSlot
    demo = build_app(ModelSlot(folder))
    _, url, _ = demo.launch(server_name='127.0.0.1', server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, Client(url, verbose=False)


def test_chat_endpoint_streams_a_reply_into_the_conversation(tmp_path):
    from smollm2_nb.serve.app import ModelSlot, check_settings
    folder = tiny_folder(tmp_path / 'chat', CHATML)
    history = [{'role': 'user', 'content': 'Hello'}, {'role': 'assistant', 'content': 'Hi!'}]
    want = list(ModelSlot(folder).chat('Capital of France?', history, **check_settings('x', 12, 0, 50, 0.95, 1.0)))
    demo, client = served(folder)
    try:
        as_parts = [{'role': m['role'], 'content': [{'type': 'text', 'text': m['content']}]} for m in history]  # Chatbot's wire format
        job = client.submit('Capital of France?', as_parts, 12, 0.8, True, 50, 0.95, 1.0, api_name='/chat')
        conversation, box = job.result(timeout=300)
        updates = job.outputs()
    finally: demo.close()
    assert box == '' and [m['role'] for m in conversation] == ['user', 'assistant', 'user', 'assistant']
    from smollm2_nb.serve.app import _message_text
    assert _message_text(conversation[2]['content']) == 'Capital of France?'
    text = _message_text(conversation[3]['content'])
    assert want and text == want[-1]                    # greedy: the same reply as the slot gives directly
    assert len(updates) >= 2                            # streamed: the question first, then the reply as it grows


def test_chat_with_a_base_model_says_to_use_completion(tmp_path):
    demo, client = served(tiny_folder(tmp_path / 'base'))
    try:
        with pytest.raises(Exception, match='no chat template'):
            client.submit('hi', [], 12, 0.8, True, 50, 0.95, 1.0, api_name='/chat').result(timeout=300)
    finally: demo.close()
