"""mnistlab.cli.process: a job's imports run with the garbage collector paused, then are frozen."""

import gc
import importlib
import sys

import pytest

from mnistlab.cli.process import lasting_imports

MODULE = """
class Ring:
    '''An object in a reference cycle: only the cyclic collector could ever free it.'''

ring = Ring()
ring.me = ring
"""


@pytest.fixture
def new_module(tmp_path, monkeypatch):
    """The name of a module not imported yet (a file in tmp_path); later passes see all again."""
    (tmp_path / "lasting_probe.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lasting_probe"
    sys.modules.pop("lasting_probe", None)
    gc.unfreeze()  # this test process's other objects go back to the collector


def collected(obj: object) -> bool:
    """Whether the collector's passes look at `obj` (frozen objects are in no generation)."""
    return any(tracked is obj for tracked in gc.get_objects())


def test_a_new_module_loads_with_the_collector_paused_and_is_then_left_out(new_module):
    with lasting_imports():
        assert not gc.isenabled()
        module = importlib.import_module(new_module)
    assert gc.isenabled()
    assert not collected(module.ring)
    assert not collected(module.Ring)
    gc.unfreeze()
    assert collected(module.ring)


def test_without_a_new_module_nothing_is_frozen(new_module):
    before = gc.get_freeze_count()
    with lasting_imports():
        import json  # noqa: F401  # loaded already
    assert gc.get_freeze_count() == before
    assert gc.isenabled()


def test_the_collector_is_back_on_after_an_error_and_stays_off_if_it_was_off(new_module):
    with pytest.raises(KeyboardInterrupt), lasting_imports():
        raise KeyboardInterrupt  # a signal while torch loads
    assert gc.isenabled()
    gc.disable()
    try:
        with lasting_imports():
            importlib.import_module(new_module)
        assert not gc.isenabled()
    finally:
        gc.enable()
