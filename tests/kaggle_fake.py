"""A Kaggle that answers as the real one, offline: the kaggle package's own client runs; only the transport under it is faked.

`FakeKaggle` is a small stateful Kaggle: kernels with numbered versions (their pushed notebook, data sources, status,
output files and log), datasets with versions, uploaded blobs. It patches `requests.adapters.HTTPAdapter.send`, the
lowest layer every `requests` session goes through (kagglesdk's API client, blob uploads, output downloads, the log
stream), and answers each request the client builds the way Kaggle does, as far as the client's source (kaggle 2.2.5,
kagglesdk 0.1.38) and public reports tell. Each behaviour names its source beside it. Responses are built with the
adapter's own `build_response` from a urllib3 response, so status codes, headers and cut streams reach the client
exactly as real traffic does.

A test plays Kaggle's runner with `start_version`/`finish_version` (or `run_version`): what a version mounts under
/kaggle/input is decided by the fake (`mount_kernel_sources`), since which attachments Kaggle really mounts cannot be
checked from here.
"""
from __future__ import annotations
import contextlib, dataclasses, http.client, io, json, os, shutil, tempfile, urllib.parse
from pathlib import Path
from unittest import mock

import requests
import urllib3

API = 'https://api.kaggle.com/v1/'         # kagglesdk/kaggle_env.py: _env_to_endpoint[PROD]; kaggle_http_client.py:_get_request_url
STORAGE = 'https://storage.fake-kaggle.test/'  # signed GCS URLs in reality; any host works, the client GETs/PUTs them as given
SOURCE_LIMIT = 1_000_000  # "The kernel source must be less than 1 megabytes in size" (HTTP 400, seen on SaveKernel)


def _denied(what: str, ref: str) -> tuple[int, dict]:
    # Kaggle answers 403 (or 401) instead of 404 for a kernel or dataset it does not know (kaggle-cli PR #951: the API
    # "returns 403/401 instead of 404"); kaggle_api_extended.py:kernels_status turns 401/403 into "Permission
    # 'kernels.get' was denied". JSON errors carry `code` and `message` (kagglesdk/kaggle_http_client.py:_prepare_response).
    return 403, {'code': 403, 'message': f"Permission '{what}.get' was denied for {ref}"}


@dataclasses.dataclass
class Version:
    number: int
    request: dict                  # the SaveKernel body as sent (text, sources, machine shape, ...)
    status: str = 'QUEUED'         # kagglesdk KernelWorkerStatus names: QUEUED RUNNING COMPLETE ERROR ...
    failure_message: str | None = None
    output: dict = dataclasses.field(default_factory=dict)   # file name (relative to /kaggle/working) -> bytes
    log: list = dataclasses.field(default_factory=list)      # events {stream_name, time, data}
    mounted: dict = dataclasses.field(default_factory=dict)  # source -> where it was mounted (for the test to see)
    invalid: set = dataclasses.field(default_factory=set)    # sources SaveKernel named invalid (never mounted)
    streamed: int = 0                                        # log events sent before the last cut


@dataclasses.dataclass
class Dataset:
    versions: list = dataclasses.field(default_factory=list)  # each: {file name: bytes}
    invisible_polls: int = 0    # status calls still answered 403 just after creation
    pending_polls: int = 0      # then this many BLOBS_RECEIVED before READY


class CutStream(io.RawIOBase):
    "A response body that ends in a dropped connection after `cut_at` bytes (or a clean end with cut_at=None)."
    def __init__(self, data: bytes, cut_at: int | None = None):
        self.buf, self.pos, self.cut_at = data, 0, cut_at
    def readable(self): return True
    def readinto(self, b):
        end = len(self.buf) if self.cut_at is None else self.cut_at
        if self.pos >= end:
            if self.cut_at is not None:  # urllib3 turns this into ProtocolError("Connection broken: IncompleteRead"),
                raise http.client.IncompleteRead(b'')  # requests into ChunkedEncodingError (models.py:iter_content)
            return 0
        n = min(len(b), end - self.pos)
        b[:n] = self.buf[self.pos:self.pos + n]; self.pos += n
        return n


class FakeKaggle:
    def __init__(self, username: str = 'ada', key: str = 'fake-key'):
        self.username, self.key = username, key
        self.kernels: dict[str, list[Version]] = {}   # 'owner/slug' -> versions (1-based numbers)
        self.datasets: dict[str, Dataset] = {}
        self.blobs: dict[str, dict] = {}               # token -> {'name', 'data'}
        self.sent: list[requests.PreparedRequest] = []
        self.responses: list[requests.Response] = []   # what each request in `sent` was answered
        self.mount_kernel_sources = True   # False: accepted by SaveKernel but nothing mounted (the self-attachment case)
        self.invalid_kernel_sources = False  # True: SaveKernel lists kernel sources as invalid (and mounts nothing)
        self.dataset_invisible_polls = 1   # GetDatasetStatus answers 403 this many times just after a create (observed on Kaggle)
        self.dataset_pending_polls = 1
        self.log_cuts = 0                  # the next this-many log stream connections are cut mid-stream
        self.log_cut_after = 2             # ... after this many new events each
        self.page_size_cap = 100

    # ------------------------------------------------------------------ client side: credentials and the transport
    @contextlib.contextmanager
    def installed(self):
        "Legacy credentials in the environment (nothing else of the user's), and the fake transport; yields self."
        env = {k: v for k, v in os.environ.items() if not k.startswith('KAGGLE_')}
        env.update(HOME=tempfile.mkdtemp(), KAGGLE_USERNAME=self.username, KAGGLE_KEY=self.key)
        fake = self
        def send(adapter, request, stream=False, **kw): return fake._send(adapter, request, stream)
        with mock.patch.dict(os.environ, env, clear=True), mock.patch('requests.adapters.HTTPAdapter.send', send):
            yield self

    def calls(self) -> list[str]:
        "The API methods (or other URLs, without query) asked for, in order."
        return [r.url.split('?')[0].rsplit('/', 1)[-1] if r.url.startswith(API) and 'Service/' in r.url else r.url.split('?')[0]
                for r in self.sent]

    def json(self, method: str, nth: int = -1) -> dict:
        "The JSON body of a request to an API method (default: the last one)."
        return json.loads([r.body for r in self.sent if r.url.endswith('/' + method)][nth])

    def _response(self, adapter, request, status: int, body, content_type='application/json', cut_at=None, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        raw = urllib3.HTTPResponse(body=CutStream(data, cut_at), status=status, preload_content=False, decode_content=False,
                                   headers={'Content-Type': content_type, **({} if cut_at is not None else {'Content-Length': str(len(data))}),
                                            **(headers or {})}, request_url=request.url)
        return adapter.build_response(request, raw)

    def _send(self, adapter, request, stream):
        if hasattr(request.body, 'read'): request.body = request.body.read()  # an upload streamed from a file
        self.sent.append(request)
        self.responses.append(self._answer(adapter, request))
        return self.responses[-1]

    def _answer(self, adapter, request):
        url = urllib.parse.urlsplit(request.url)
        full = f'{url.scheme}://{url.netloc}{url.path}'
        if full.startswith(STORAGE): return self._storage(adapter, request, url)
        if not self._authorized(request):  # kagglesdk sends basic auth for legacy keys (kaggle_http_client.py:_try_fill_auth)
            return self._response(adapter, request, 401, {'code': 401, 'message': 'Unauthenticated'})
        if full.startswith(API + 'kernels/logs/stream/'):
            return self._log_stream(adapter, request, full[len(API + 'kernels/logs/stream/'):], urllib.parse.parse_qs(url.query))
        if full.startswith(API) and 'Service/' in full:
            method = full.rsplit('/', 1)[-1]
            handler = getattr(self, f'_{method}', None)
            if handler is None: return self._response(adapter, request, 404, {'code': 404, 'message': f'no fake for {method}'})
            status, body = handler(json.loads(request.body or b'{}'))
            return self._response(adapter, request, status, body)
        return self._response(adapter, request, 404, {'code': 404, 'message': 'Not found'})

    def _authorized(self, request) -> bool:
        import base64
        want = 'Basic ' + base64.b64encode(f'{self.username}:{self.key}'.encode()).decode()
        return request.headers.get('Authorization') == want

    # ------------------------------------------------------------------ kernels
    def _kernel(self, owner: str, slug: str, label: str | None = None) -> Version | None:
        versions = self.kernels.get(f'{owner}/{slug}')
        if not versions: return None
        if not label: return versions[-1]
        n = int(label.removeprefix('v'))  # the client writes versions as `v<N>` (kaggle_api_extended.py:_kernel_version_label)
        return versions[n - 1] if 1 <= n <= len(versions) else None

    def version(self, ref: str) -> Version:
        "A version by 'owner/slug/N' (or the latest by 'owner/slug')."
        owner, slug, *n = ref.split('/')
        return self._kernel(owner, slug, n[0] if n else None)

    def _SaveKernel(self, b):
        text = b.get('text', '')
        if len(text.encode()) >= SOURCE_LIMIT:  # the server's limit; the client sends the notebook as one JSON string
            return 400, {'code': 400, 'message': 'The kernel source must be less than 1 megabytes in size'}
        ref = b['slug']
        invalid_k = [s for s in b.get('kernelDataSources', []) if self.invalid_kernel_sources or self.version(s) is None]
        invalid_d = [s for s in b.get('datasetDataSources', []) if '/'.join(s.split('/')[:2]) not in self.datasets]
        versions = self.kernels.setdefault(ref, [])  # SaveKernel with a new slug creates the kernel (kaggle_api_extended.py:kernels_push)
        v = Version(len(versions) + 1, b, invalid=set(invalid_k) | set(invalid_d))
        versions.append(v)
        # ApiSaveKernelResponse: ref, url, versionNumber, error, invalid*Sources (kernels_api_service.py types)
        return 200, {'ref': f'/code/{ref}', 'url': f'https://www.kaggle.com/code/{ref}', 'versionNumber': v.number,
                     'invalidKernelSources': invalid_k, 'invalidDatasetSources': invalid_d, 'kernelId': 1000 + len(self.kernels)}

    def _GetKernelSessionStatus(self, b):
        v = self._kernel(b.get('userName', ''), b.get('kernelSlug', ''), b.get('versionLabel'))
        if v is None: return _denied('kernels', f"{b.get('userName')}/{b.get('kernelSlug')}")
        return 200, {'status': v.status, **({'failureMessage': v.failure_message} if v.failure_message else {})}

    def _GetKernel(self, b):  # `kernels pull`: metadata with currentVersionNumber, and the source
        v = self._kernel(b.get('userName', ''), b.get('kernelSlug', ''), b.get('versionLabel'))
        if v is None: return _denied('kernels', f"{b.get('userName')}/{b.get('kernelSlug')}")
        ref = f"{b['userName']}/{b['kernelSlug']}"
        return 200, {'metadata': {'ref': ref, 'slug': b['kernelSlug'], 'author': b['userName'],
                                  'currentVersionNumber': len(self.kernels[ref]), 'kernelDataSources': v.request.get('kernelDataSources', []),
                                  'datasetDataSources': v.request.get('datasetDataSources', [])},
                     'blob': {'source': v.request.get('text', ''), 'slug': b['kernelSlug']}}

    def _ListKernelSessionOutput(self, b):
        owner, slug = b.get('userName', ''), b.get('kernelSlug', '')
        v = self._kernel(owner, slug, b.get('versionLabel'))
        if v is None: return _denied('kernels', f'{owner}/{slug}')
        # a session's /kaggle/working is saved when it ends (assumed; the client has nothing to say about a running one)
        names = sorted(v.output) if v.status in ('COMPLETE', 'ERROR', 'CANCEL_ACKNOWLEDGED') else []
        start, size = int(b.get('pageToken') or 0), min(int(b.get('pageSize') or 20), self.page_size_cap)
        page = names[start:start + size]
        files = [{'fileName': n, 'url': STORAGE + f'output/{owner}/{slug}/{v.number}/' + urllib.parse.quote(n, safe='')} for n in page]
        body = {'files': files, 'log': json.dumps(v.log) if v.log else None}  # `log`: the persisted JSON event list
        if start + size < len(names): body['nextPageToken'] = str(start + size)  # kernels_output follows it page by page
        return 200, {k: x for k, x in body.items() if x is not None}

    def _log_stream(self, adapter, request, path: str, query: dict):
        # GET /v1/kernels/logs/stream/{owner}/{slug}?versionLabel=vN (kaggle_api_extended.py:kernels_logs_stream)
        owner, slug = path.split('/')[:2]
        v = self._kernel(owner, slug, (query.get('versionLabel') or [None])[0])
        if v is None:
            status, body = _denied('kernels', f'{owner}/{slug}')
            return self._response(adapter, request, status, body)
        if v.status not in ('QUEUED', 'RUNNING'):  # a finished session: the persisted log blob, a JSON list, not SSE
            return self._response(adapter, request, 200, json.dumps(v.log).encode(), 'application/json')
        # While running: SSE `data: {json}` events; the server replays from the beginning on every connection and ends
        # with `data: END_OF_LOG` (kernels_logs_stream, _iter_sse_events, kernels_logs_cli's comments); the load balancer
        # cuts idle connections every few minutes (kernels_logs_cli), here after `log_cut_after` new events.
        body = b''.join(b'data: ' + json.dumps(e).encode() + b'\n\n' for e in v.log)
        if self.log_cuts > 0:
            self.log_cuts -= 1
            v.streamed = min(v.streamed + self.log_cut_after, len(v.log))
            cut_at = len(b''.join(b'data: ' + json.dumps(e).encode() + b'\n\n' for e in v.log[:v.streamed]))
            return self._response(adapter, request, 200, body + b'data: END_OF_LOG\n\n', 'text/event-stream', cut_at=cut_at)
        return self._response(adapter, request, 200, body + b'data: END_OF_LOG\n\n', 'text/event-stream')

    # ------------------------------------------------------------------ datasets and blobs
    def _GetDatasetStatus(self, b):
        ref = f"{b.get('ownerSlug')}/{b.get('datasetSlug')}"
        d = self.datasets.get(ref)
        if d is None: return _denied('datasets', ref)
        if d.invisible_polls > 0:  # just after creation the status call can still be denied (observed on Kaggle)
            d.invisible_polls -= 1; return _denied('datasets', ref)
        if d.pending_polls > 0: d.pending_polls -= 1; return 200, {'status': 'BLOBS_RECEIVED'}
        return 200, {'status': 'READY'}  # DatabundleVersionStatus names (kagglesdk/datasets/types/dataset_enums.py)

    def _StartBlobUpload(self, b):  # blobs.BlobApiService: a token and the URL to PUT the bytes to (_upload_blob)
        token = f'blob-{len(self.blobs) + 1}'
        self.blobs[token] = {'name': b['name'], 'data': None, 'length': int(b.get('contentLength', 0))}
        return 200, {'token': token, 'createUrl': STORAGE + f'upload/{token}'}

    def _files(self, files: list) -> dict | None:
        got = {}
        for f in files:
            blob = self.blobs.get(f.get('token'))
            if blob is None or blob['data'] is None: return None
            got[blob['name']] = blob['data']
        return got

    def _CreateDataset(self, b):
        ref = f"{b['ownerSlug']}/{b['slug']}"
        if ref in self.datasets:  # ApiCreateDatasetResponse.error, HTTP 200 (dataset_create_new's own check says the same)
            return 200, {'status': 'error', 'error': f'The requested slug "{b["slug"]}" is already in use by a dataset.'}
        files = self._files(b.get('files', []))
        if files is None: return 400, {'code': 400, 'message': 'a file token was not uploaded'}
        self.datasets[ref] = Dataset([files], self.dataset_invisible_polls, self.dataset_pending_polls)
        return 200, {'ref': ref, 'url': f'https://www.kaggle.com/datasets/{ref}', 'status': 'ok'}

    def _CreateDatasetVersion(self, b):
        ref = f"{b['ownerSlug']}/{b['datasetSlug']}"
        d = self.datasets.get(ref)
        if d is None: return _denied('datasets', ref)
        files = self._files(b.get('body', {}).get('files', []))
        if files is None: return 400, {'code': 400, 'message': 'a file token was not uploaded'}
        d.versions.append(files); d.pending_polls = self.dataset_pending_polls
        return 200, {'ref': ref, 'url': f'https://www.kaggle.com/datasets/{ref}', 'status': 'ok'}

    def _ListDatasetFiles(self, b):
        ref = f"{b.get('ownerSlug')}/{b.get('datasetSlug')}"
        d = self.datasets.get(ref)
        if d is None: return _denied('datasets', ref)
        files = d.versions[int(b['datasetVersionNumber']) - 1 if b.get('datasetVersionNumber') else -1]
        return 200, {'datasetFiles': [{'name': n, 'totalBytes': len(x), 'datasetRef': ref} for n, x in sorted(files.items())]}

    def _storage(self, adapter, request, url):
        parts = url.path.strip('/').split('/')
        if parts[0] == 'upload' and request.method == 'PUT':  # the resumable upload target (upload_complete/_resume_upload)
            blob = self.blobs.get(parts[1])
            if blob is None: return self._response(adapter, request, 404, b'', 'text/plain')
            body = request.body or b''
            if not body and blob['data'] is not None: return self._response(adapter, request, 200, b'', 'text/plain')
            if not body:  # `Content-Range: bytes */N` status query of an upload never started: 308 without Range
                return self._response(adapter, request, 308, b'', 'text/plain')
            blob['data'] = body if isinstance(body, bytes) else body.encode()
            return self._response(adapter, request, 200, b'', 'text/plain')
        if parts[0] == 'output' and request.method == 'GET':
            owner, slug, n, name = parts[1], parts[2], int(parts[3]), urllib.parse.unquote(parts[4])
            v = self._kernel(owner, slug, str(n))
            if v is None or name not in v.output: return self._response(adapter, request, 404, b'', 'text/plain')
            # with Content-Length, which kaggle_api_extended.py:download_file checks the written file against
            return self._response(adapter, request, 200, v.output[name], 'application/octet-stream')
        return self._response(adapter, request, 404, b'', 'text/plain')

    # ------------------------------------------------------------------ the runner's side (what the test does as Kaggle)
    def add_dataset(self, ref: str, files: dict):
        self.datasets[ref] = Dataset([dict(files)])

    def start_version(self, ref: str, root: str | os.PathLike, number: int | None = None) -> Version:
        "Mark a pushed version RUNNING and lay out its /kaggle at `root`: working/ empty, input/ holding what it mounts."
        v = self.version(f'{ref}/{number}' if number else ref)
        root = Path(root); shutil.rmtree(root, ignore_errors=True)
        (root/'working').mkdir(parents=True)
        inp = root/'input'; inp.mkdir()
        invalid = v.invalid
        for s in v.request.get('kernelDataSources', []):  # a kernel's output: /kaggle/input/notebooks/<owner>/<slug>/
            if s in invalid or not self.mount_kernel_sources: continue
            src = self.version(s)
            dest = inp/'notebooks'/s.split('/')[0]/s.split('/')[1]
            self._write(dest, src.output); v.mounted[s] = str(dest)
        for s in v.request.get('datasetDataSources', []):  # a dataset: /kaggle/input/datasets/<owner>/<slug>/
            if s in invalid: continue
            owner, slug, *n = s.split('/')
            d = self.datasets[f'{owner}/{slug}']
            dest = inp/'datasets'/owner/slug
            self._write(dest, d.versions[int(n[0]) - 1 if n else -1]); v.mounted[s] = str(dest)
        v.status = 'RUNNING'
        return v

    def finish_version(self, v: Version, working: str | os.PathLike, ok: bool, log_text: str = '', failure: str | None = None):
        "Store /kaggle/working as the version's output and end it COMPLETE or ERROR."
        working = Path(working)
        v.output = {p.relative_to(working).as_posix(): p.read_bytes() for p in sorted(working.rglob('*')) if p.is_file()}
        v.log += [{'stream_name': 'stdout', 'time': float(i), 'data': line + '\n'} for i, line in enumerate(log_text.splitlines())]
        v.status, v.failure_message = ('COMPLETE', None) if ok else ('ERROR', failure or 'Your notebook hit an unhandled error')

    @staticmethod
    def _write(dest: Path, files: dict):
        for name, data in files.items():
            (dest/name).parent.mkdir(parents=True, exist_ok=True)
            (dest/name).write_bytes(data)
