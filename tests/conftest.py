import os
# Two CPU cores: keep every test process to one intra-op thread so parallel workers don't oversubscribe.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest

@pytest.fixture(scope='module')
def split(tmp_path_factory):
    "The Fashion-MNIST 5-shot split (seed 0) the classifier tests share; a test module may define its own `split`."
    from diffmix_nb.data import load_dataset_spec, make_split
    sp = make_split(load_dataset_spec('fashion_mnist'), shots=5, seed=0)
    sp.save(tmp_path_factory.mktemp('split')/'split.json')
    return sp
