"""Property coverage of the XML models, as virt-manager's test_checkprops does it.

Every typed property of every model in virtfleet.xml (Text, Attr, Flag, MemoryKiB, Child,
Children and plain properties) is wrapped here, in the test process only, to record that a
test read it and, where it can be written, wrote it. After a whole unit run,
test_xml_model.py::test_every_model_property_is_exercised fails naming any property no test
touched: a property nobody reads or writes is either dead code or untested XML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import virtfleet.xml.domain
import virtfleet.xml.network
import virtfleet.xml.snapshot
import virtfleet.xml.storage  # noqa: F401  (every model class must exist before wrapping)
from virtfleet.xml import model
from virtfleet.xml.domain import MemoryKiB

DATA = (model.Text, model.Attr, model.Flag, MemoryKiB)  # read and written
VIEWS = (model.Child, model.Children)  # only read: they hand out models
CHECKPROPS = "test_xml_model.py::test_every_model_property_is_exercised"

# (defining class, property, "get" or "set") -> touched by some test
SEEN: set[tuple[str, str, str]] = set()
ALL: set[tuple[str, str, str]] = set()
STATE: dict[str, bool] = {"full_run": False}


def _models() -> Iterator[type[model.XMLModel]]:
    todo = [model.XMLModel]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("virtfleet.xml."):
            yield cls


_OWNER: dict[int, tuple[str, str]] = {}


def _recorded(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, obj: Any, *args: Any) -> Any:
        if obj is not None and id(self) in _OWNER:
            SEEN.add((*_OWNER[id(self)], kind))
        return fn(self, obj, *args)
    return wrapper


def _install() -> None:
    for cls in (*DATA, *VIEWS):
        cls.__get__ = _recorded("get", cls.__dict__["__get__"])  # type: ignore[method-assign]
        if "__set__" in cls.__dict__:
            cls.__set__ = _recorded("set", cls.__dict__["__set__"])  # type: ignore[attr-defined]
    for cls in set(_models()):
        for name, value in list(vars(cls).items()):
            where = (f"{cls.__module__.removeprefix('virtfleet.xml.')}.{cls.__name__}", name)
            if isinstance(value, DATA):
                _OWNER[id(value)] = where
                ALL.update({(*where, "get"), (*where, "set")})
            elif isinstance(value, VIEWS):
                _OWNER[id(value)] = where
                ALL.add((*where, "get"))
            elif isinstance(value, property) and value.fget is not None:
                ALL.add((*where, "get"))
                if value.fset is not None:
                    ALL.add((*where, "set"))
                setattr(cls, name, _RecordedProperty(value, where))


class _RecordedProperty(property):
    def __init__(self, prop: property, where: tuple[str, str]) -> None:
        def fget(obj: Any) -> Any:
            SEEN.add((*where, "get"))
            assert prop.fget is not None
            return prop.fget(obj)

        def fset(obj: Any, value: Any) -> None:
            SEEN.add((*where, "set"))
            assert prop.fset is not None
            prop.fset(obj, value)

        super().__init__(fget, fset if prop.fset is not None else None, None, prop.__doc__)


_install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The coverage check runs last, after every other test has had its go."""
    items.sort(key=lambda item: item.nodeid.endswith(CHECKPROPS))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Only a run of the whole unit suite can say a property is never exercised."""
    unit = Path(__file__).parent
    ran = {Path(str(item.path)) for item in session.items}
    everything = set(unit.glob("test_*.py")) <= ran
    option = session.config.option
    filtered = any(getattr(option, name, None) for name in ("keyword", "markexpr", "lf",
                                                              "deselect"))
    STATE["full_run"] = everything and not filtered


# --- the same check when pytest-xdist spreads the suite over workers -------------------------
# Each worker sees only its share of the tests, so no worker can tell. Each hands what it saw to
# the controller, which checks the union once every worker is done.

WORKERS: dict[str, bool] = {}  # the controller's record: worker id -> it ran the whole suite


def xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if xdist_worker(config):
        config.workeroutput["xml_seen"] = sorted(SEEN)  # type: ignore[attr-defined]
        config.workeroutput["xml_full_run"] = STATE["full_run"]  # type: ignore[attr-defined]
        return
    if not WORKERS or not all(WORKERS.values()):
        return  # no workers (the test itself checked), or not a run of the whole suite
    missing = sorted(ALL - SEEN)
    if missing:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        text = "model properties no test reads or writes (test them or remove them):" + "".join(
            f"\n  {cls}.{name} ({kind})" for cls, name, kind in missing)
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", f"FAILED {CHECKPROPS}", red=True)
            reporter.write_line(text)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist, on the controller: a worker finished; keep what it saw."""
    out = getattr(node, "workeroutput", {})
    WORKERS[out.get("workerid", str(id(node)))] = bool(out.get("xml_full_run")) and not error
    SEEN.update(tuple(seen) for seen in out.get("xml_seen", ()))
