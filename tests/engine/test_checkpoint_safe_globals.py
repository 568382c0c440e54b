"""``import graddrop_mtl`` lets ``torch.load(weights_only=True)`` read mmengine checkpoints, and nothing more."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import graddrop_mtl  # noqa: F401  (registers the safe globals)


class _Getattr:
    """Pickles as ``getattr(obj, name)``, the way HistoryBuffer's statistics methods are pickled."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def test_message_hub_and_numpy_values_round_trip(tmp_path):
    hub = MessageHub.get_instance('test_checkpoint_safe_globals')
    for v in (1.5, 2.5, 4.0):
        hub.update_scalar('train/loss', v)
    hub.update_info('seed', np.int64(7))
    state = dict(message_hub=hub.state_dict(), meta=dict(array=np.arange(3.0), scalar=np.float32(0.5),
                                                         dtype=np.dtype('int16')))
    torch.save(state, tmp_path / 'ckpt.pth')
    loaded = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == pytest.approx(8.0 / 3) and buffer.max() == 4.0
    assert loaded['message_hub']['runtime_info']['seed'] == 7
    np.testing.assert_array_equal(loaded['meta']['array'], np.arange(3.0))
    assert loaded['meta']['scalar'] == np.float32(0.5) and loaded['meta']['dtype'] == np.dtype('int16')


@pytest.mark.parametrize('obj, name', [(HistoryBuffer, '__init__'), (HistoryBuffer, '__class__'),
                                       (np.ndarray, 'tofile'), (HistoryBuffer, 'no_such_method')])
def test_the_allowed_getattr_reaches_only_history_buffer_methods(tmp_path, obj, name):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'x': _Getattr(obj, name)}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match='only public methods of mmengine'):
        torch.load(path, weights_only=True)


def test_the_tools_checkpoint_loader_stays_weights_only(tmp_path):
    """What tools/train.py and tools/test.py set up (trust_local_checkpoints) loads through mmengine's own loader
    with weights_only=True: an mmengine checkpoint loads, a file with anything else is refused."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from graddrop_mtl.engine.launch import trust_local_checkpoints
    trust_local_checkpoints()
    hub = MessageHub.get_instance('test_the_tools_checkpoint_loader')
    hub.update_scalar('train/loss', 1.0)
    torch.save(dict(state_dict={'w': torch.ones(2)}, message_hub=hub.state_dict()), tmp_path / 'ok.pth')
    assert torch.equal(CheckpointLoader.load_checkpoint(str(tmp_path / 'ok.pth'))['state_dict']['w'], torch.ones(2))
    torch.save(dict(state_dict={}, other=_Getattr(np.ndarray, 'tofile')), tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'evil.pth'))
