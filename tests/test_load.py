"`load_model` on sources a reader need not see in the notebook: wrapped state dicts, another program's file, a bad path."
import pytest, torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2
from smollm2_nb.run.checkpoint import Checkpoint, save_checkpoint
from smollm2_nb.serve.load import load_model

def test_wrapped_checkpoints_load_and_foreign_files_do_not(tmp_path):
    cfg = get_config('tiny'); model = SmolLM2(cfg)
    for prefix in ('_orig_mod.', 'module.'):   # torch.compile and DDP prefixes
        wrapped = Checkpoint(step=7, config=cfg.to_dict(), model={prefix + k: v for k, v in model.state_dict().items()})
        save_checkpoint(wrapped, tmp_path / prefix)
        loaded, _, info = load_model(tmp_path / prefix)
        assert info['step'] == 7 and torch.equal(loaded.norm.weight, model.norm.weight)
    torch.save({'weights': 1}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a smollm2_nb checkpoint'): load_model(tmp_path / 'other.pt')
    with pytest.raises(Exception, match='neither a model folder nor a hub id'): load_model(tmp_path / 'missing_dir/x')
