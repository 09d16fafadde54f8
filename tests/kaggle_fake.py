"""A Kaggle that answers offline: the kaggle package's own client runs; only the transport under `requests` is replaced.

`offline_kaggle(**replies)` fakes legacy credentials and patches `requests.adapters.HTTPAdapter.send`, the lowest
layer every `requests` session goes through (the kagglesdk API client, blob uploads, output downloads). Each request is
recorded as it was built and answered from `replies`: an API method name (`SaveKernel`, `GetKernelSessionStatus`, ...)
-> a JSON body (with `code` for an HTTP error), or a full URL -> the bytes of a download; a list answers in turn.
"""
import contextlib, io, json, os, tempfile
from unittest import mock

import requests


class Recorder:
    def __init__(self, replies: dict): self.sent, self.replies = [], replies

    def __call__(self, adapter, request, stream=False, **kw):
        if hasattr(request.body, 'read'): request.body = request.body.read()  # an upload streamed from a file
        self.sent.append((request, stream))
        key = request.url if request.url in self.replies else request.url.rsplit('/', 1)[-1]
        body = self.replies.get(key)
        if isinstance(body, list):  # answers in turn, the last one repeated
            body = body.pop(0) if len(body) > 1 else body[0]
        r = requests.Response()
        r.url, r.request, r.status_code = request.url, request, 200
        if isinstance(body, bytes):
            r.raw, r.headers['Content-Type'] = io.BytesIO(body), 'application/octet-stream'
        else:
            if isinstance(body, dict) and 'code' in body: r.status_code = body['code']
            r.raw, r.headers['Content-Type'] = io.BytesIO(json.dumps(body).encode()), 'application/json'
        return r

    def calls(self) -> list[str]:
        "The API methods / URLs asked for, in order."
        return [r.url.rsplit('/', 1)[-1] if '/v1/' in r.url else r.url for r, _ in self.sent]

    def json(self, method: str) -> dict:
        "The JSON body of the last request to an API method."
        return json.loads(next(r.body for r, _ in reversed(self.sent) if r.url.endswith('/' + method)))


@contextlib.contextmanager
def offline_kaggle(username: str = 'ada', **replies):
    "Fake credentials and a recording transport: nothing leaves the machine; yields the `Recorder`."
    env = {k: v for k, v in os.environ.items() if not k.startswith('KAGGLE_')}
    env.update(HOME=tempfile.mkdtemp(), KAGGLE_USERNAME=username, KAGGLE_KEY='fake-key')
    rec = Recorder(replies)
    send = lambda adapter, request, **kw: rec(adapter, request, **kw)
    with mock.patch.dict(os.environ, env, clear=True), mock.patch('requests.adapters.HTTPAdapter.send', send):
        yield rec
