"""Session fixtures of the training tests (helpers live in trainutil.py)."""
import pytest

from trainutil import make_faces, write_pretrained_files


@pytest.fixture(scope="session")
def face_dirs(tmp_path_factory):
    """(train dir, test dir): 16 training and 8 test demo faces at 16 px."""
    return make_faces(tmp_path_factory.mktemp("faces") / "demo")


@pytest.fixture(scope="session")
def pretrained_files(tmp_path_factory):
    """Random tiny pretrained networks in the released file formats: {name: path}."""
    return write_pretrained_files(tmp_path_factory.mktemp("pretrained"))


@pytest.fixture(autouse=True)
def single_thread():
    """The tiny 16-px networks gain nothing from intra-op threads, and on a busy 2-core machine
    OpenMP's spin-waiting makes two threads ~10x slower in CPU time than one; restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
