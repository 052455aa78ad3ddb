"""Canary: the Celery/kombu/redis-py names ``celeryapp/overrides`` relies on still exist.

The names live in one place, ``celeryapp/overrides/__init__.py`` (next to the
docstring that explains them); each is one test case here, so an upgrade that
drops or renames one fails naming it, e.g. ``kombu.transport.redis:Channel.
_brpop_sent_at missing``. No Redis, no subprocess: classes are inspected, not run.
"""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from celeryapp import overrides
from celeryapp.overrides import CALLED_BY, OWN_NAMES, PRIVATE_NAMES, RELIED_PUBLIC_NAMES

OVERRIDES_DIR = Path(overrides.__file__).parent


def resolve(target: str):
    """``"module:Qualified.name"`` (or a module) to the object."""
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def _assigned_on_self(cls: type, name: str) -> bool:
    """An instance attribute: ``self.<name> = ...`` in the code of the class or a base."""
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # builtins (object)
            continue
        if pattern.search(source):
            return True
    return False


def has_name(owner, name: str) -> bool:
    if isinstance(owner, Mapping):  # celery.app.defaults.DEFAULTS: a setting
        return name in owner
    try:
        inspect.getattr_static(owner, name)
        return True
    except AttributeError:
        pass
    return inspect.isclass(owner) and _assigned_on_self(owner, name)


def _function(owner, name: str):
    """The callable behind ``owner.name`` and whether it takes ``self`` first."""
    raw = inspect.getattr_static(owner, name)
    if isinstance(raw, (staticmethod, classmethod)):
        return raw.__func__, isinstance(raw, classmethod)
    return raw, inspect.isclass(owner) and inspect.isfunction(raw)


def refuses(owner, name: str, call: tuple) -> str | None:
    """Why ``owner.name`` no longer takes the call the overrides make, or None."""
    func, takes_self = _function(owner, name)
    signature = inspect.signature(func)
    positional = [object()] * (takes_self + call.count("*"))
    keywords = {arg: object() for arg in call if arg not in ("*", "**")}
    try:
        signature.bind(*positional, **keywords)
    except TypeError as exc:
        return f"{signature} no longer accepts {call}: {exc}"
    if "**" in call and not any(p.kind is p.VAR_KEYWORD
                                for p in signature.parameters.values()):
        return f"{signature} no longer accepts arbitrary keywords (**)"
    return None


def _case_id(row) -> str:
    return f"{row[0]}.{row[1]}"


@pytest.mark.parametrize("row", PRIVATE_NAMES + RELIED_PUBLIC_NAMES, ids=_case_id)
def test_name_exists_and_takes_our_call(row):
    target, name, call = row
    owner = resolve(target)
    assert has_name(owner, name), f"{target}.{name} missing"
    if call is not None:
        problem = refuses(owner, name, call)
        assert problem is None, f"{target}.{name}{problem}"


def _source_of(target: str) -> str:
    obj = resolve(target)
    for attr in ("fget", "func", "__wrapped__"):  # property, cached_property
        obj = getattr(obj, attr, obj)
    return inspect.getsource(obj)


@pytest.mark.parametrize("row", CALLED_BY, ids=lambda row: f"{row[0]}->{row[1]}")
def test_overridden_hook_is_still_called(row):
    caller, name = row
    assert re.search(rf"\b{re.escape(name)}\b", _source_of(caller)), \
        f"{caller} no longer uses {name}: our override of it would be dead code"


@pytest.mark.parametrize("row", OWN_NAMES, ids=lambda row: f"{row[0]}.{row[1]}")
def test_own_name_shadows_nothing(row):
    target, name = row
    assert not has_name(resolve(target), name), \
        f"{target}.{name} now exists upstream: ours shadows it"


# --- the tables are complete and the docstring says the same ------------------------
def _underscore_attributes(path: Path) -> set[str]:
    """``x._name`` reads/writes and ``_name`` definitions in class bodies of a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    found.update(t.id for t in targets if isinstance(t, ast.Name))
    return {name for name in found if name.startswith("_") and not name.startswith("__")}


@pytest.mark.parametrize("module", sorted(p.name for p in OVERRIDES_DIR.glob("*.py")))
def test_every_underscore_attribute_is_listed(module):
    """A new private name used in an override must be added to a table (and so be
    checked above), not slip in unwatched."""
    listed = {row[1] for row in PRIVATE_NAMES + RELIED_PUBLIC_NAMES + OWN_NAMES}
    unlisted = _underscore_attributes(OVERRIDES_DIR / module) - listed
    assert not unlisted, f"celeryapp/overrides/{module} uses unlisted names {sorted(unlisted)}"


@pytest.mark.parametrize("row", PRIVATE_NAMES, ids=_case_id)
def test_docstring_names_it(row):
    target, name, _ = row
    short = target.rpartition(":")[2] or target.rpartition(".")[2]
    doc = overrides.__doc__
    assert f"{short}.{name}" in doc or f"``{name}``" in doc, \
        f"celeryapp/overrides/__init__.py's docstring does not mention {short}.{name}"


# --- behaviour the overrides rely on, beyond names ----------------------------------
def test_celery_task_sender_takes_queue_and_declare():
    """RedactingAMQP wraps the function ``AMQP._create_task_sender`` returns, passing
    ``queue=`` and ``declare=`` by keyword."""
    from celery import Celery
    from celery.app.amqp import AMQP

    app = Celery("canary", broker="memory://", set_as_current=False)
    try:
        sender = AMQP._create_task_sender(app.amqp)
        inspect.signature(sender).bind(object(), "name", object(), queue=None, declare=())
    finally:
        app.close()


def test_kombu_caches_declarations_by_entity_hash():
    """RedactingAMQP's shortcut looks for ``hash(queue)`` in
    ``Connection.declared_entities``, as kombu's ``_maybe_declare`` stores it."""
    from kombu import Connection, Exchange, Producer, Queue
    from kombu.common import maybe_declare

    from celeryapp.overrides.redaction import _declared

    queue = Queue("canary-q", Exchange("canary-q"), routing_key="canary-q")
    with Connection("memory://") as conn:
        producer = Producer(conn.default_channel)
        assert not _declared(producer, queue)
        maybe_declare(queue, conn.default_channel)
        assert hash(queue) in conn.declared_entities
        assert _declared(producer, queue)


def test_per_process_backend_caches_are_cached_properties():
    """After a fork the backend drops these from its ``__dict__``: that only works for
    ``cached_property`` values stored under the same name."""
    from celeryapp.overrides.backend import _PER_PROCESS, TurboRedisBackend

    for name in _PER_PROCESS:
        value = inspect.getattr_static(TurboRedisBackend, name)
        assert isinstance(value, functools.cached_property), \
            f"{name} is {type(value).__name__}, not a cached_property"


def test_installed_versions_are_the_pinned_series():
    tomllib = pytest.importorskip(
        "tomllib", reason="tomllib is Python 3.11+: on 3.10 the pins in pyproject.toml go unread")
    from importlib.metadata import version

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    wanted = {req.name: req for req in map(Requirement, tomllib.loads(
        pyproject.read_text())["project"]["dependencies"])}
    for name in ("celery", "kombu", "redis"):
        assert version(name) in wanted[name].specifier, \
            f"installed {name} {version(name)} is outside pyproject's {wanted[name]}"


def test_stock_switch_leaves_out_the_transport_backend_and_consumer():
    """TURBO_STOCK_CELERY: nothing of transport.py, backend.py or consumer.py is used;
    the stock backend and AMQP add redaction only (and the recent list)."""
    from celery.app.amqp import AMQP
    from celery.backends.redis import RedisBackend

    from celeryapp.config import Settings
    from celeryapp.factory import celery_config
    from celeryapp.overrides.stock import STOCK_AMQP, STOCK_BACKENDS

    conf = celery_config(Settings(broker_url="redis://h:1/0", stock_celery=True))
    assert conf["broker_transport"] is None  # kombu's, chosen by the URL
    assert conf["worker_consumer"] == "celery.worker.consumer:Consumer"
    used = [repr(value) for value in conf.values()] + [STOCK_AMQP, *STOCK_BACKENDS.values()]
    for module in ("transport", "backend", "consumer"):
        assert not any(f"celeryapp.overrides.{module}" in text for text in used), module
    expected = {STOCK_AMQP: (AMQP, ["_create_task_sender", "as_task_v2"]),
                STOCK_BACKENDS["redis"]: (RedisBackend, ["_get_result_meta", "store_result"])}
    for target, (base, methods) in expected.items():
        ours = {name for klass in resolve(target).__mro__
                if klass.__module__.startswith("celeryapp") for name in vars(klass)}
        assert sorted(name for name in ours if hasattr(base, name)
                      and not name.startswith("__")) == methods, target
    assert STOCK_BACKENDS["rediss"] == STOCK_BACKENDS["redis"]
    default = celery_config(Settings(broker_url="redis://h:1/0"))
    assert default["broker_transport"] == "celeryapp.overrides.transport:Transport"
    assert default["worker_consumer"] == "celeryapp.overrides.consumer:Consumer"
