"""Public functions that raise say what they raise (pure `ast`, no import of qernel).

A public function or method (name not starting with `_`, at module level or in a public
module-level class) whose own body (not nested defs or classes) holds `raise SomeError(...)`
or `raise SomeError` must name `SomeError` in its docstring; for a public class's `__init__`,
`__post_init__`, `__new__` and `__call__` (constructing or calling the class raises) the
class docstring may name it instead. A bare `raise` (re-raise) and
`raise name` of a variable bound by `except ... as name` are not counted; `raise make(...)`
of a module-level function `make` counts as raising its return annotation's class.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qernel"


def _own_nodes(fn: ast.AST):
    """The nodes of `fn`'s body, not descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _factories(tree: ast.Module) -> dict[str, str]:
    """Module-level function name → the class name of its return annotation (exception factories)."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            ann = node.returns
            name = ann.value if isinstance(ann, ast.Constant) else getattr(ann, "id", getattr(ann, "attr", None))
            if isinstance(name, str):
                out[node.name] = name
    return out


def _raised_names(fn: ast.AST, factories: dict[str, str] | None = None) -> set[str]:
    """The exception class names `fn`'s own body raises (re-raises of caught ones excluded)."""
    factories = factories or {}
    caught = {n.name for n in _own_nodes(fn) if isinstance(n, ast.ExceptHandler) and n.name}
    names = set()
    for node in _own_nodes(fn):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        call = isinstance(node.exc, ast.Call)
        exc = node.exc.func if call else node.exc
        if isinstance(exc, ast.Name):
            if call and exc.id in factories:
                names.add(factories[exc.id])
            elif exc.id not in caught:
                names.add(exc.id)
        elif isinstance(exc, ast.Attribute):
            names.add(exc.attr)
    return names


#: Methods whose raises a public class's docstring may document (they raise on building or calling it).
CLASS_LEVEL = ("__init__", "__post_init__", "__new__", "__call__")


def _public_functions(tree: ast.Module):
    """(qualified name, node, docstring text) of the module's public functions and public classes'
    methods (and their CLASS_LEVEL methods, whose text includes the class docstring)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node, ast.get_docstring(node) or ""
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(item) or ""
                if item.name in CLASS_LEVEL:
                    yield f"{node.name}.{item.name}", item, doc + "\n" + (ast.get_docstring(node) or "")
                elif not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item, doc


def _undocumented(tree: ast.Module):
    """(name, line, raised classes its docstring omits) for each public function omitting some."""
    factories = _factories(tree)
    for name, fn, doc in _public_functions(tree):
        missing = sorted(e for e in _raised_names(fn, factories) if e not in doc)
        if missing:
            yield name, fn.lineno, missing


def undocumented_raises(package: Path = PACKAGE) -> list[str]:
    """'file:line name: missing X, Y' for each public function whose docstring omits a raised class."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line, missing in _undocumented(tree):
            problems.append(f"{path.relative_to(ROOT)}:{line} {name}: missing {', '.join(missing)}")
    return problems


def test_public_functions_document_what_they_raise():
    problems = undocumented_raises()
    assert not problems, "public functions whose docstring does not name what they raise:\n" + "\n".join(problems)


def test_the_check_sees_raises():
    src = '''
def documented(x):
    """Raises ValueError for x < 0."""
    if x < 0:
        raise ValueError(x)

def undocumented(x):
    """Nothing."""
    raise KeyError(x)

def reraises(x):
    """Nothing."""
    try:
        return x()
    except OSError as err:
        raise

def nested(x):
    """Nothing."""
    def _inner():
        raise TypeError(x)
    return _inner

def _private(x):
    raise RuntimeError(x)

def make_error(x) -> "LookupError":
    return LookupError(x)

def factory(x):
    """Nothing."""
    raise make_error(x)

class Public:
    def method(self):
        raise SystemExit

    def _helper(self):
        raise OSError

    def __post_init__(self):
        raise AttributeError

class Built:
    """Raises IndexError when built wrong."""
    def __init__(self):
        raise IndexError

class _Private:
    def method(self):
        raise SystemExit
'''
    tree = ast.parse(src)
    raised = {name: _raised_names(fn, _factories(tree)) for name, fn, _ in _public_functions(tree)}
    assert raised == {"documented": {"ValueError"}, "undocumented": {"KeyError"}, "reraises": set(),
                      "nested": set(), "make_error": set(), "factory": {"LookupError"},
                      "Public.method": {"SystemExit"}, "Public.__post_init__": {"AttributeError"},
                      "Built.__init__": {"IndexError"}}
    assert [(name, missing) for name, _, missing in _undocumented(tree)] == [
        ("undocumented", ["KeyError"]), ("factory", ["LookupError"]), ("Public.method", ["SystemExit"]),
        ("Public.__post_init__", ["AttributeError"])]
