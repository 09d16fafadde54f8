"""A test double for the launch watchdog, loaded by every Python process started with this folder on PYTHONPATH (the
torchrun workers of tests/test_kaggle_watchdog.py). It stands in for what only a real multi-GPU machine does, around
`smollm2_nb.train.launch.collective_check` (the workers' first all-reduce, which the watchdog times):
- SMOLLM2_KAGGLE_SIMULATE_HANG: an NCCL all-reduce that never completes: 'always', or '1' = unless NCCL_P2P_DISABLE=1
  (Kaggle's 2x T4 symptom, which the watchdog's retry without peer-to-peer is for);
- SMOLLM2_KAGGLE_SIMULATE_SLOW_START: seconds each worker waits after the all-reduce worked (a long first compile),
  which the watchdog must not take for a hang.
The names are `smollm2_nb.train.launch.HANG_ENV` and `SLOW_START_ENV`; nothing else is changed."""
import importlib.abc, importlib.util, os, sys, time

HANG_ENV, SLOW_START_ENV = 'SMOLLM2_KAGGLE_SIMULATE_HANG', 'SMOLLM2_KAGGLE_SIMULATE_SLOW_START'
TARGET = 'smollm2_nb.train.launch'

def _patch(launch):
    real = launch.collective_check
    def collective_check(device=None):
        how = os.environ.get(HANG_ENV, '')
        if int(os.environ.get('WORLD_SIZE', '1')) > 1 and (how == 'always' or (how == '1' and os.environ.get('NCCL_P2P_DISABLE') != '1')):
            while True: time.sleep(60)          # what a stuck NCCL all-reduce looks like from outside: no progress, no exit
        world = real(device)
        time.sleep(float(os.environ.get(SLOW_START_ENV) or 0))
        return world
    launch.collective_check = collective_check  # `train_from_json` looks it up when it runs

class _AfterImport(importlib.abc.MetaPathFinder):
    "Patch the launch module once it is imported (a worker imports it to call `train_from_json`)."
    def find_spec(self, name, path, target=None):
        if name != TARGET: return None
        sys.meta_path.remove(self)
        try: spec = importlib.util.find_spec(name)
        finally: sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        def exec_module(module): run(module); _patch(module)
        spec.loader.exec_module = exec_module
        return spec

if os.environ.get(HANG_ENV) or os.environ.get(SLOW_START_ENV): sys.meta_path.insert(0, _AfterImport())
