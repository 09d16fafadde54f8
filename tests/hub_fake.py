"""A Hugging Face Hub that answers offline: huggingface_hub's own `HfApi` runs; only the HTTP client under it is replaced.

huggingface_hub sends every request through one httpx client made by a factory it lets us swap
(`huggingface_hub.utils._http.set_client_factory`). `offline_hub()` installs a client whose transport is a
`HubRecorder`: each request is kept exactly as the real client built it, and answered as the Hub would (a new
repository, "this YAML is valid", "upload these files inline", a commit, a Space variable). Anything else gets a 404
naming the request, so a new endpoint shows up as a failing test rather than a silent pass.
"""
import base64, contextlib, json, os

from huggingface_hub import constants
from huggingface_hub.utils import _http

httpx = getattr(_http, 'httpx2', None) or getattr(_http, 'httpx')  # the httpx module this huggingface_hub uses


class HubRecorder:
    "Answers huggingface_hub's requests as the Hub would, recording them."
    def __init__(self, fail: dict | None = None): self.requests, self.fail = [], fail or {}  # path -> HTTP status to answer

    def __call__(self, request):
        self.requests.append(request)
        path, body = request.url.path, request.content
        if path in self.fail: return httpx.Response(self.fail[path], json={'error': f'refused: {request.method} {path}'})
        if path == '/api/repos/create':
            d = json.loads(body)
            kind = 'spaces/' if d.get('type') == 'space' else ''
            return httpx.Response(200, json={'url': f"https://huggingface.co/{kind}{d['organization']}/{d['name']}"})
        if path == '/api/validate-yaml': return httpx.Response(200, json={'errors': [], 'warnings': []})
        if '/preupload/' in path:  # every file small enough to go inline, base64 in the commit
            files = json.loads(body)['files']
            return httpx.Response(200, json={'files': [dict(path=f['path'], uploadMode='regular', shouldIgnore=False) for f in files]})
        if '/commit/' in path:     # /api/{models|spaces}/USER/NAME/commit/main
            _, _, kind, user, name, *_ = path.split('/')
            page = f"https://huggingface.co/{'spaces/' if kind == 'spaces' else ''}{user}/{name}"
            return httpx.Response(200, json={'commitUrl': f'{page}/commit/{"0" * 40}', 'commitOid': '0' * 40})
        if path.endswith('/variables'): return httpx.Response(200, json={})
        return httpx.Response(404, json={'error': f'not recorded: {request.method} {path}'})

    def paths(self) -> list[tuple[str, str]]: return [(r.method, r.url.path) for r in self.requests]
    def commit(self): return next(r for r in self.requests if '/commit/' in r.url.path)


def committed_files(request) -> dict[str, bytes]:
    "path -> content of the files in a recorded commit request (NDJSON lines, contents base64)."
    lines = [json.loads(l) for l in request.content.decode().splitlines()]
    return {l['value']['path']: base64.b64decode(l['value']['content']) for l in lines if l['key'] == 'file'}


@contextlib.contextmanager
def offline_hub(fail: dict | None = None):
    "huggingface_hub talking to a `HubRecorder(fail)` (yielded) instead of the network, with offline mode lifted meanwhile."
    rec, offline = HubRecorder(fail), constants.HF_HUB_OFFLINE
    def client():  # huggingface_hub's default client (its request hook, redirects, no timeout) on a recording transport
        return httpx.Client(transport=httpx.MockTransport(rec), event_hooks={'request': [_http.hf_request_event_hook]},
                            follow_redirects=True, timeout=None)
    _http.close_session()
    _http.set_client_factory(client)
    constants.HF_HUB_OFFLINE = False  # tests run with HF_HUB_OFFLINE=1; nothing here reaches the network anyway
    try: yield rec
    finally:
        constants.HF_HUB_OFFLINE = offline
        _http.close_session()
        _http.set_client_factory(_http.default_client_factory)


@contextlib.contextmanager
def no_hf_token(tmp_dir):
    "No token anywhere huggingface_hub looks: no HF_TOKEN, no OIDC exchange, no stored `hf auth login` file."
    keys = ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE')
    old, old_path = {k: os.environ.pop(k, None) for k in keys}, constants.HF_TOKEN_PATH
    constants.HF_TOKEN_PATH = os.path.join(str(tmp_dir), 'no-token')
    try: yield
    finally:
        constants.HF_TOKEN_PATH = old_path
        for k, v in old.items():
            if v is not None: os.environ[k] = v
