"""Execute the notebooks the way Jupyter's Run All does: a fresh kernel each, top to bottom, blind to nbdev's `#|` flags.

    python tools/run_notebooks.py                 # execute every notebook and store its outputs (then nbdev_clean)
    python tools/run_notebooks.py nbs/train/26_train.ipynb
    python tools/run_notebooks.py --check         # CI: execute into memory; fail on an error, or on a cell that
                                                  # displays something but has no stored output in the repository

Kernels run with one torch thread each (OMP_NUM_THREADS=1) so two notebooks at a time share a 2-core machine; the
Kaggle kernel notebook runs in its CPU smoke mode with /kaggle redirected to a temporary folder.
"""
from __future__ import annotations
import argparse, os, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
KAGGLE_NB = ROOT / 'kaggle' / 'smollm2-train.ipynb'

def notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts) + ([KAGGLE_NB] if KAGGLE_NB.exists() else [])

def execute(path: Path, timeout: int) -> tuple[nbformat.NotebookNode, float]:
    "The notebook at `path` executed in a fresh kernel, in its own folder (raises CellExecutionError on an error)."
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    with tempfile.TemporaryDirectory() as kaggle_root:
        if path == KAGGLE_NB: os.environ.update(SMOLLM2_KAGGLE_SMOKE='1', SMOLLM2_KAGGLE_ROOT=kaggle_root)
        t = time.time()
        try: NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
        finally: os.environ.clear(); os.environ.update(env_before)
    return nb, time.time() - t

WIDGET = 'application/vnd.jupyter.widget-view+json'

def static_outputs(cell) -> list:
    "A cell's outputs without live widget views (progress bars, the live dashboard): a saved notebook cannot show them."
    return [o for o in cell.get('outputs', []) if WIDGET not in o.get('data', {})]

def displays(cell) -> bool:
    "Whether an executed code cell shows something (stdout, a value, a figure or a table)."
    return any(o.get('output_type') in ('stream', 'execute_result', 'display_data') and o.get('name') != 'stderr'
               for o in static_outputs(cell))

def missing_outputs(committed: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> list[int]:
    "Indexes of code cells that display something when run but have no stored output in `committed`."
    code = lambda nb: [c for c in nb.cells if c.cell_type == 'code']
    return [i for i, (a, b) in enumerate(zip(code(committed), code(executed))) if displays(b) and not a.get('outputs')]

def run_one(path: Path, check: bool, timeout: int) -> tuple[Path, str | None, float]:
    try: nb, secs = execute(path, timeout)
    except CellExecutionError as e: return path, f"a cell failed:\n{str(e)[-3000:]}", 0.0
    except Exception as e: return path, f"{type(e).__name__}: {e}", 0.0
    if check:
        missing = missing_outputs(nbformat.read(path, as_version=4), nb)
        if missing:
            return path, (f"code cells {missing} display something but have no stored output: run "
                          f"`python tools/run_notebooks.py {path.relative_to(ROOT)}` and commit the notebook"), secs
    else:
        for c in nb.cells:
            if c.cell_type == 'code':
                c.outputs, c.execution_count = static_outputs(c), None
                for o in c.outputs: o.pop('execution_count', None) if o.get('output_type') != 'execute_result' else o.update(execution_count=None)
                c.metadata.pop('execution', None); c.metadata.pop('papermill', None)   # keep tags: papermill's 'parameters'
        nb.metadata.pop('widgets', None)
        nbformat.write(nb, path)
    return path, None, secs

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('paths', nargs='*', type=Path, help='notebooks (default: every notebook in nbs/ and the Kaggle kernel)')
    p.add_argument('--check', action='store_true', help='execute without writing; fail on errors or missing stored outputs')
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--timeout', type=int, default=900, help='seconds per cell')
    a = p.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    paths = [q.resolve() for q in a.paths] or notebooks()
    t0, failed = time.time(), []
    with ThreadPoolExecutor(a.jobs) as ex:
        for path, err, secs in ex.map(lambda q: run_one(q, a.check, a.timeout), paths):
            print(f"{'FAIL' if err else 'ok  '} {path.relative_to(ROOT)} ({secs:.0f} s)" + (f"\n{err}" if err else ''), flush=True)
            if err: failed.append(path)
    if not a.check and paths:
        subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)

    print(f"{len(paths) - len(failed)} passed, {len(failed)} failed ({time.time() - t0:.0f} s)")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
