"""Which external programs the Python in src/, tests/ and bench/ runs, read from its syntax (ast).

A program is collected where
  - an argv is passed to subprocess.run/Popen/check_output/check_call/call (its first item),
  - a name is passed to shutil.which, asyncio.create_subprocess_exec or os.exec*/spawn*,
  - a command line is passed to os.system/popen or subprocess.getoutput (its first word),
  - either is passed to a function of ours that hands its parameter on to one of those
    (lab.run.run, guestfs._run, tests.unit.tools.require_tool, ...), to any depth.
The first item is followed through local variables, module constants (imported ones too),
`for` and comprehension variables, dict and tuple subscripts, `x or y`, and what our own
functions return: `subprocess.run([exe, ...])` with `exe = binary(kind)`, where `binary` returns
`shutil.which(COMMANDS[kind][0])`, yields every program in COMMANDS.

An argv whose program cannot be worked out is reported as opaque, so a call the scan cannot read
is seen rather than skipped. `sys.executable` (our own interpreter) is neither.
"""

from __future__ import annotations

import ast
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "scripts" / "programs.txt"
SCANNED = ("src", "tests", "bench")
# Where `make deps` looks beyond PATH (dhcpd, haproxy, ip and losetup live in sbin).
EXTRA_PATH = "/usr/sbin:/sbin"

# The argument is an argv (program first), the program itself, or a shell command line.
ARGV, PROG, SHELL = "argv", "prog", "shell"
# Calls that run a program: (how, position, keyword) of the argument that names it.
SINKS: dict[str, tuple[str, int, str]] = {
    **{f"subprocess.{f}": (ARGV, 0, "args")
       for f in ("run", "Popen", "check_output", "check_call", "call")},
    "shutil.which": (PROG, 0, "cmd"),
    "os.system": (SHELL, 0, "command"),
    "os.popen": (SHELL, 0, "cmd"),
    "subprocess.getoutput": (SHELL, 0, "cmd"),
    "subprocess.getstatusoutput": (SHELL, 0, "cmd"),
    "asyncio.create_subprocess_exec": (PROG, 0, "program"),
    **{f"os.{f}": (PROG, 0, "file")
       for f in ("execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
                 "posix_spawn", "posix_spawnp")},
    **{f"os.{f}": (PROG, 1, "file")
       for f in ("spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp",
                 "spawnlpe")},
}
# Calls whose result is their first argument, or a path to it (which).
PASS_THROUGH = {"shutil.which", "list", "tuple", "sorted", "str", "os.fspath"}
MAX_DEPTH = 40


@dataclass(frozen=True)
class Use:
    program: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.program}"


@dataclass(frozen=True)
class Opaque:
    """A program the scan could not work out, and the source text that names it."""
    file: str
    line: int
    source: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source}"


@dataclass(frozen=True)
class Entry:
    program: str
    package: str
    by: str
    why: str
    line: int


def read_manifest(path: Path = MANIFEST) -> list[Entry]:
    """scripts/programs.txt: program, package, who runs it, why; # comments and blanks skipped."""
    entries = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = raw.split(maxsplit=3)
        if len(parts) < 4:
            raise ValueError(f"{path.name}:{n}: want program, package, by, why: {raw!r}")
        program, package, by, why = parts
        entries.append(Entry(program, package, by, why, n))
    return entries


def resolve(program: str) -> bool:
    """Whether `program` (a name, or an absolute path glob) is on this machine, as make deps
    looks for it."""
    if program.startswith("/"):
        return any(Path("/").glob(program.lstrip("/")))
    search = os.pathsep.join([os.environ.get("PATH", ""), EXTRA_PATH])
    return shutil.which(program, path=search) is not None


# --- what an expression may be ----------------------------------------------------------------

Func = ast.FunctionDef | ast.AsyncFunctionDef
Bindings = dict[str, list[tuple[ast.expr, bool]]]  # name -> [(value, takes each element)]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
SELF = "<sys.executable>"  # our own interpreter, not an external program


@dataclass(frozen=True)
class Seq:
    """A list or tuple literal; its items are read when asked."""
    items: tuple[ast.expr, ...]
    scope: Scope


@dataclass(frozen=True)
class Map:
    keys: tuple[ast.expr | None, ...]
    values: tuple[ast.expr, ...]
    scope: Scope


@dataclass(frozen=True)
class Param:
    """A parameter of the function being read that no caller binds here (its callers say
    what it is); with `head`, that parameter's first item."""
    func: Func
    name: str
    head: bool = False


@dataclass(frozen=True)
class FuncRef:
    module: Module
    node: Func
    method: bool


@dataclass(frozen=True)
class Foreign:
    """A dotted name that is not ours (subprocess.run, os.environ) or one of our modules."""
    name: str


Value = str | Seq | Map | Param | FuncRef | Foreign | _Unknown


@dataclass(eq=False)
class Scope:
    """Where a name is read: a module, a function (`func`, inside its parents), or a class body
    (`cls` without `func`). `args` binds a function's parameters to a caller's expressions."""
    module: Module
    func: Func | None = None
    parent: Scope | None = None
    cls: ast.ClassDef | None = None
    args: dict[str, tuple[ast.expr, Scope]] = field(default_factory=dict)


@dataclass(eq=False)
class Module:
    name: str
    rel: str
    tree: ast.Module
    scope: Scope = field(init=False)
    imports: dict[str, str] = field(default_factory=dict)  # alias -> dotted name
    bindings: Bindings = field(default_factory=dict)
    funcs: dict[str, Func] = field(default_factory=dict)   # top-level functions

    def __post_init__(self) -> None:
        self.scope = Scope(self)


def _bind(out: Bindings, node: ast.AST) -> None:
    """Record what `node` assigns to a plain name, if anything."""
    if isinstance(node, ast.Assign):
        pairs = [(t, node.value, False) for t in node.targets]
    elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
        pairs = [(node.target, node.value, False)]
    elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        pairs = [(node.target, node.iter, True)]
    else:
        return
    for target, value, each in pairs:
        if isinstance(target, ast.Name):
            out.setdefault(target.id, []).append((value, each))


def _module_name(rel: Path) -> str:
    """src/virtfleet/lab/run.py -> virtfleet.lab.run; tests/unit/cli.py -> tests.unit.cli"""
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "src":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class Scanner:
    """The Python files under `dirs` of `root`, indexed once; `scan()` reads what they run."""

    def __init__(self, root: Path, dirs: tuple[str, ...] = SCANNED) -> None:
        self.modules: dict[str, Module] = {}
        self.local: dict[Func, Bindings] = {}
        self.returns: dict[Func, list[ast.expr]] = {}
        self.nested: dict[Func, dict[str, Func]] = {}  # functions defined inside a function
        self.home: dict[Func, Scope] = {}              # each function's own scope
        self.methods: dict[str, list[FuncRef]] = {}    # methods by name, for obj.method()
        self.calls: list[tuple[Module, ast.Call, Scope]] = []
        self.sink_params: dict[Func, dict[str, str]] = {}  # our functions that run a parameter
        self._canon: set[int] = set()                  # scopes as written (no caller's args)
        self._busy: set[tuple[int, int]] = set()
        self._memo: dict[tuple[int, int], list[Value]] = {}
        paths = [p for d in dirs for p in sorted((root / d).rglob("*.py"))]
        # A script's own directory is on sys.path: in a directory that is no package (bench/),
        # `from common import timed` names bench/common.py.
        self._script_siblings = {_module_name(p.relative_to(root)) for p in paths
                                 if not (p.parent / "__init__.py").exists()}
        for path in paths:
            rel = path.relative_to(root)
            self._index(Module(_module_name(rel), str(rel), ast.parse(path.read_text())),
                        path.name == "__init__.py")
        self._find_wrappers()

    # -- reading the files ----------------------------------------------------------------------

    def _index(self, m: Module, is_package: bool) -> None:
        """One pass over a module: imports, and each scope's names, returns, defs and calls."""
        package = m.name if is_package else m.name.rpartition(".")[0]
        todo: list[tuple[ast.AST, Scope]] = [(m.tree, m.scope)]
        self._canon.add(id(m.scope))
        while todo:
            root, scope = todo.pop()
            binds = m.bindings if scope is m.scope else (
                self.local.setdefault(scope.func, {}) if scope.func is not None else {})
            stack = [root]
            while stack:
                node = stack.pop()
                _bind(binds, node)
                if isinstance(node, ast.Call):
                    self.calls.append((m, node, scope))
                elif isinstance(node, ast.Return) and node.value is not None \
                        and scope.func is not None:
                    self.returns.setdefault(scope.func, []).append(node.value)
                elif isinstance(node, ast.Import | ast.ImportFrom):
                    self._import(m, package, node, self._script_siblings)
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                        inner = Scope(m, child, scope, scope.cls)
                        self.home[child] = inner
                        self._canon.add(id(inner))
                        if scope is m.scope:
                            m.funcs[child.name] = child
                        elif scope.func is None:  # a class body
                            self.methods.setdefault(child.name, []).append(
                                FuncRef(m, child, method=True))
                        else:
                            self.nested.setdefault(scope.func, {})[child.name] = child
                        todo.append((child, inner))
                    elif isinstance(child, ast.ClassDef):
                        body = Scope(m, None, scope, child)  # a class body has no locals
                        self._canon.add(id(body))
                        todo.append((child, body))
                    else:
                        stack.append(child)
        self.modules[m.name] = m

    @staticmethod
    def _import(m: Module, package: str, node: ast.Import | ast.ImportFrom,
                script_siblings: set[str]) -> None:
        def sibling(name: str) -> str:
            """`name` as imported by a script: its neighbour if it has one of that name."""
            near = f"{package}.{name.split('.')[0]}"
            return f"{package}.{name}" if m.name in script_siblings \
                and near in script_siblings else name

        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    m.imports[a.asname] = sibling(a.name)
                else:
                    m.imports[a.name.split(".")[0]] = sibling(a.name.split(".")[0])
            return
        base = node.module or ""
        if node.level:
            up = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join([*up, base] if base else up)
        else:
            base = sibling(base)
        for a in node.names:
            m.imports[a.asname or a.name] = f"{base}.{a.name}"

    # -- evaluation -------------------------------------------------------------------------------

    def values(self, expr: ast.expr, scope: Scope, depth: int = 0) -> list[Value]:
        """What `expr`, read in `scope`, may be; UNKNOWN where the scan cannot tell."""
        key = (id(expr), id(scope))
        if depth > MAX_DEPTH or key in self._busy:
            return [UNKNOWN]  # too deep, or a name defined through itself (x = f(x))
        memo = self._memo if id(scope) in self._canon else None
        if memo is not None and key in memo:
            return memo[key]
        self._busy.add(key)
        try:
            out = self._values(expr, scope, depth + 1)
        finally:
            self._busy.discard(key)
        if memo is not None:
            memo[key] = out
        return out

    def _values(self, expr: ast.expr, scope: Scope, d: int) -> list[Value]:
        match expr:
            case ast.Constant(value=str() as s):
                return [s]
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [Seq(tuple(elts), scope)]
            case ast.Dict(keys=keys, values=vals):
                return [Map(tuple(keys), tuple(vals), scope)]
            case ast.Name(id=name):
                return self._name(name, scope, d)
            case ast.Attribute(value=ast.Name(id="sys"), attr="executable"):
                return [SELF]
            case ast.Attribute(value=base, attr=attr):
                return [x for v in self.values(base, scope, d)
                        for x in (self._dotted(f"{v.name}.{attr}", d)
                                  if isinstance(v, Foreign) else [UNKNOWN])]
            case ast.Subscript(value=base, slice=index):
                return self._subscript(base, index, scope, d)
            case ast.BoolOp(values=operands):
                return [v for o in operands for v in self.values(o, scope, d)]
            case ast.IfExp(body=a, orelse=b):
                return self.values(a, scope, d) + self.values(b, scope, d)
            case ast.BinOp(left=ast.List(elts=elts) | ast.Tuple(elts=elts), op=ast.Add(),
                           right=right):
                return [Seq((*elts, ast.Starred(right, ast.Load())), scope)]
            case ast.BinOp(left=left, op=ast.Add()):
                return self.values(left, scope, d)
            case ast.Call(func=func, args=args, keywords=kws):
                return self._call(func, args, kws, scope, d)
        return [UNKNOWN]

    def _bound(self, binds: list[tuple[ast.expr, bool]], scope: Scope, d: int) -> list[Value]:
        out: list[Value] = []
        for value, each in binds:
            vals = self.values(value, scope, d)
            out += [e for v in vals for e in self.elements(v, d)] if each else vals
        return out

    @staticmethod
    def _params(func: Func) -> list[str]:
        a = func.args
        return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]

    def _name(self, name: str, scope: Scope, d: int) -> list[Value]:
        s: Scope | None = scope
        while s is not None and s is not scope.module.scope:
            if s.func is not None:
                binds = self.local.get(s.func, {}).get(name, [])
                out = self._bound(binds, s, d)
                if name in self._params(s.func):
                    if name in s.args:
                        arg, caller = s.args[name]
                        out += self.values(arg, caller, d)
                    else:
                        out.append(Param(s.func, name))
                    return out
                if binds:
                    return out
                if name in self.nested.get(s.func, {}):
                    return [FuncRef(s.module, self.nested[s.func][name], method=False)]
            s = s.parent
        m = scope.module
        if name in m.funcs:
            return [FuncRef(m, m.funcs[name], method=False)]
        if name in m.bindings:
            return self._bound(m.bindings[name], m.scope, d)
        if name in m.imports:
            return self._dotted(m.imports[name], d)
        return [UNKNOWN]

    def _dotted(self, dotted: str, d: int) -> list[Value]:
        """A dotted name: one of our functions or constants, or a name to match sinks with."""
        mod, _, attr = dotted.rpartition(".")
        m = self.modules.get(mod)
        if m is None or dotted in self.modules:
            return [Foreign(dotted)]
        if attr in m.funcs:
            return [FuncRef(m, m.funcs[attr], method=False)]
        if attr in m.bindings:
            return self._bound(m.bindings[attr], m.scope, d)
        if attr in m.imports and d <= MAX_DEPTH:
            return self._dotted(m.imports[attr], d + 1)  # imported there, imported here
        return [UNKNOWN]

    def elements(self, v: Value, d: int) -> list[Value]:
        """What iterating over `v` may give."""
        if isinstance(v, Seq):
            out: list[Value] = []
            for item in v.items:
                if isinstance(item, ast.Starred):
                    out += [e for x in self.values(item.value, v.scope, d)
                            for e in self.elements(x, d)]
                else:
                    out += self.values(item, v.scope, d)
            return out
        if isinstance(v, Map):
            return [x for k in v.keys if k is not None for x in self.values(k, v.scope, d)]
        return [UNKNOWN]

    def head(self, v: Value, d: int) -> list[Value]:
        """The program of an argv: its first item (a plain string is a one-word argv)."""
        if not isinstance(v, Seq):
            return [v]
        if not v.items:
            return [UNKNOWN]
        first = v.items[0]
        if isinstance(first, ast.Starred):
            return [h for x in self.values(first.value, v.scope, d) for h in self.head(x, d)]
        return self.values(first, v.scope, d)

    def _subscript(self, base: ast.expr, index: ast.expr, scope: Scope, d: int) -> list[Value]:
        i = index.value if isinstance(index, ast.Constant) else None
        out: list[Value] = []
        for v in self.values(base, scope, d):
            if isinstance(v, Seq):
                if i == 0:
                    out += self.head(v, d)
                elif isinstance(i, int) and 0 < i < len(v.items) \
                        and not any(isinstance(x, ast.Starred) for x in v.items[:i + 1]):
                    out += self.values(v.items[i], v.scope, d)
                else:
                    out += self.elements(v, d)
            elif isinstance(v, Map):
                keyed = [val for k, val in zip(v.keys, v.values, strict=True)
                         if i is not None and isinstance(k, ast.Constant) and k.value == i]
                for val in keyed or list(v.values):
                    out += self.values(val, v.scope, d)
            elif isinstance(v, Param) and not v.head and i == 0:
                out.append(Param(v.func, v.name, head=True))
            else:
                out.append(UNKNOWN)
        return out

    def callee(self, func: ast.expr, scope: Scope, d: int = 0) -> list[str | FuncRef]:
        """What a call calls: a foreign dotted name (or builtin) or one of our functions."""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in ("self", "cls") and scope.cls is not None:
            return [FuncRef(scope.module, stmt, method=True) for stmt in scope.cls.body
                    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                    and stmt.name == func.attr]
        if isinstance(func, ast.Name):
            found = self._name(func.id, scope, d)
            if found == [UNKNOWN]:
                return [func.id]  # a builtin: list, str, ...
        else:
            found = self.values(func, scope, d)
        out = [f if isinstance(f, FuncRef) else f.name for f in found
               if isinstance(f, FuncRef | Foreign)]
        if not out and isinstance(func, ast.Attribute):
            # obj.method(...) on an object the scan cannot type: any method of ours of that
            # name that runs its parameter (matching by name can only add, never hide, a use)
            out = [f for f in self.methods.get(func.attr, []) if f.node in self.sink_params]
        return out

    def _call(self, func: ast.expr, args: list[ast.expr], kws: list[ast.keyword], scope: Scope,
              d: int) -> list[Value]:
        out: list[Value] = []
        for c in self.callee(func, scope, d):
            if isinstance(c, str):
                if c in PASS_THROUGH and args and not isinstance(args[0], ast.Starred):
                    out += self.values(args[0], scope, d)
                else:
                    out.append(UNKNOWN)
                continue
            home = self.home[c.node]
            inner = Scope(c.module, c.node, home.parent, home.cls,
                          args=self._bind_args(c, args, kws, scope))
            for ret in self.returns.get(c.node, []):
                out += self.values(ret, inner, d)
        return out or [UNKNOWN]

    @staticmethod
    def _positional(f: FuncRef) -> list[str]:
        a = f.node.args
        names = [p.arg for p in (*a.posonlyargs, *a.args)]
        return names[1:] if f.method and names[:1] in (["self"], ["cls"]) else names

    def _bind_args(self, f: FuncRef, args: list[ast.expr], kws: list[ast.keyword],
                   scope: Scope) -> dict[str, tuple[ast.expr, Scope]]:
        bound: dict[str, tuple[ast.expr, Scope]] = {}
        for name, arg in zip(self._positional(f), args, strict=False):
            if isinstance(arg, ast.Starred):
                break
            bound[name] = (arg, scope)
        for kw in kws:
            if kw.arg is not None:
                bound[kw.arg] = (kw.value, scope)
        return bound

    # -- sinks and wrappers -----------------------------------------------------------------------

    def sink(self, c: str | FuncRef) -> list[tuple[str, int, str]]:
        """(how, position, keyword) of each argument of this callee that names a program."""
        if isinstance(c, str):
            return [SINKS[c]] if c in SINKS else []
        positional = self._positional(c)
        return [(how, positional.index(p) if p in positional else -1, p)
                for p, how in self.sink_params.get(c.node, {}).items()]

    @staticmethod
    def argument(call: ast.Call, pos: int, keyword: str) -> ast.expr | None:
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        if 0 <= pos < len(call.args) \
                and not any(isinstance(a, ast.Starred) for a in call.args[:pos + 1]):
            return call.args[pos]
        return None

    def _sunk(self) -> list[tuple[Module, ast.Call, Scope, str, ast.expr]]:
        """Each call's arguments that name a program: (module, call, scope, how, argument)."""
        out = []
        for m, call, scope in self.calls:
            for c in self.callee(call.func, scope):
                for how, pos, kw in self.sink(c):
                    arg = self.argument(call, pos, kw)
                    if arg is not None:
                        out.append((m, call, scope, how, arg))
        return out

    def _find_wrappers(self) -> None:
        """Our functions that pass a parameter on as a program or an argv, to a fixed point."""
        changed = True
        while changed:
            changed = False
            for _m, _call, scope, how, arg in self._sunk():
                if scope.func is None:
                    continue
                for v in self.values(arg, scope):
                    for h in (self.head(v, 0) if how == ARGV and isinstance(v, Seq) else [v]):
                        if not isinstance(h, Param) or h.func is not scope.func:
                            continue
                        # run(argv) or [*argv, ...]: an argv; [prog, ...], which(prog): a program
                        as_argv = h.head or (how == ARGV and h is v)
                        params = self.sink_params.setdefault(scope.func, {})
                        if h.name not in params:
                            params[h.name] = ARGV if as_argv else PROG
                            changed = True

    # -- the scan ---------------------------------------------------------------------------------

    def scan(self) -> tuple[list[Use], list[Opaque]]:
        uses: set[Use] = set()
        opaque: set[Opaque] = set()
        for m, call, scope, how, arg in self._sunk():
            vals = self.values(arg, scope)
            for p in [h for v in vals for h in self.head(v, 0)] if how == ARGV else vals:
                if isinstance(p, str) and how == SHELL:
                    p = p.split()[0] if p.split() else p
                if isinstance(p, str):
                    if p != SELF:
                        uses.add(Use(p, m.rel, call.lineno))
                elif not (isinstance(p, Param) and p.func is scope.func
                          and p.name in self.sink_params.get(p.func, {})):
                    # (a wrapper's own parameter is read at its callers instead)
                    first = arg.elts[0] if isinstance(arg, ast.List | ast.Tuple) and arg.elts \
                        and how == ARGV else arg
                    opaque.add(Opaque(m.rel, call.lineno, ast.unparse(first)))
        return sorted(uses, key=str), sorted(opaque, key=str)


def own_scripts(root: Path = ROOT) -> set[str]:
    """virtfleet's own console scripts (pyproject's [project.scripts]): pip puts them in the
    venv, so they need no Debian package."""
    import tomllib

    with (root / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["project"].get("scripts", {}))


def collect(root: Path = ROOT, dirs: tuple[str, ...] = SCANNED) -> tuple[list[Use], list[Opaque]]:
    """Every program the Python under `dirs` runs, and the calls whose program is unreadable."""
    return Scanner(root, dirs).scan()
