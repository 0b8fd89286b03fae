"""The code's shape as DESIGN.md fixes it, checked on the source: analysis reads only documented record fields,
no import cycle (lazy or not), no function over 60 lines, the halves import only what they may, every third-party
import is declared, and both backends satisfy one protocol with the same public names."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .helpers import ROOT

SOURCES = sorted([*(ROOT / "bench").rglob("*.py"), *(ROOT / "analysis").rglob("*.py")])
DOTTED = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")
NOT_FIELDS = {"svg.hashsalt"}  # matplotlib's rcParam
FILE_SUFFIXES = (".md", ".png", ".svg", ".csv", ".json", ".jsonl", ".npz", ".txt", ".py", ".sh")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included), as absolute names."""
    tree = ast.parse(path.read_text())
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _graph() -> dict:
    ours = {_module(p): p for p in SOURCES}
    return {m: {i for i in _imports(p) if i in ours and i != m} for m, p in ours.items()}


def test_every_dotted_field_name_in_analysis_is_a_documented_record_field():
    from analysis.load import FILE_COLUMNS, STATS_PREFIX
    from analysis.metrics import DERIVED
    from bench import record

    known = set(record.fields_doc()) | set(FILE_COLUMNS) | set(DERIVED)
    unknown = []
    for path in (ROOT / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            text = node.value
            if (not DOTTED.fullmatch(text) or text.endswith(FILE_SUFFIXES) or text in NOT_FIELDS
                    or text.startswith(("analysis.", "bench.", STATS_PREFIX))):
                continue
            if text not in known:
                unknown.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not unknown, "dotted names that are no documented record field: " + ", ".join(unknown)


def test_the_dotted_name_check_catches_a_typo(tmp_path):
    """The check above is only as good as its pattern: a misspelt field must match it and be unknown."""
    from bench import record

    assert DOTTED.fullmatch("dispach.mode") and "dispach.mode" not in record.fields_doc()
    assert DOTTED.fullmatch("dispatch.mode") and "dispatch.mode" in record.fields_doc()


def test_no_import_cycle_lazy_or_not():
    graph = _graph()
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        on_path.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"a"}}
    assert "a" in graph["b"] and "b" in graph["a"]  # the shape test_no_import_cycle_lazy_or_not walks
    assert _imports(ROOT / "bench" / "experiments" / "__init__.py") >= {"bench.experiments.escape",
                                                                         "bench.experiments.base"}


def test_no_function_over_60_lines():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long


def test_each_half_imports_only_what_it_may():
    """bench/ never imports pandas, seaborn or matplotlib; analysis/ never TensorFlow, Keras or JAX, and of bench/
    only the record module; training code never imports pytest (only the plugin and the benchmarks do)."""
    bad = []
    for path in SOURCES:
        mods = {i.split(".")[0] for i in _imports(path)}
        name = _module(path)
        if name.startswith("bench") and mods & {"pandas", "seaborn", "matplotlib"}:
            bad.append(f"{name}: {mods & {'pandas', 'seaborn', 'matplotlib'}}")
        if name.startswith("analysis"):
            if mods & {"tensorflow", "keras", "jax"}:
                bad.append(f"{name}: {mods & {'tensorflow', 'keras', 'jax'}}")
            benches = {i for i in _imports(path) if i.startswith("bench") and i != "bench"
                       and not i.startswith("bench.record")}
            if benches:
                bad.append(f"{name}: {benches}")
        if name.startswith("bench") and "pytest" in mods and not (name in ("bench.plugin", "bench.adapter")
                                                                   or path.name.startswith("test_")):
            bad.append(f"{name}: pytest")
    assert not bad, bad


DISTRIBUTIONS = {"cpuinfo": "py-cpuinfo", "pynvml": "nvidia-ml-py", "yaml": "pyyaml", "sklearn": "scikit-learn",
                 "pytest_benchmark": "pytest-benchmark"}


def test_every_imported_third_party_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in project["dependencies"]}
    declared |= {re.split(r"[<>=!\[ ;]", d)[0].lower() for ds in project["optional-dependencies"].values() for d in ds}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for path in SOURCES:
        for mod in {i.split(".")[0] for i in _imports(path)}:
            if mod in stdlib or mod in ("bench", "analysis", "") or mod.startswith("_"):
                continue
            if DISTRIBUTIONS.get(mod, mod).lower() not in declared:
                missing.add(f"{mod} ({_module(path)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


CONFORMANCE = """
import inspect, json, types
from bench import backends
from bench.backends import tensorflow as tf_backend, jax as jax_backend
out = {}
for module in (tf_backend, jax_backend):
    names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
                   and (getattr(v, "__module__", module.__name__) == module.__name__ or n.isupper()))
    members = [n for n in dir(backends.Backend) if not n.startswith("_") and n not in ("keras",)]
    missing = [n for n in members if not hasattr(module, n)]
    def params(fn, skip_self=False):
        ps = list(inspect.signature(fn).parameters.values())[1 if skip_self else 0:]
        return [(p.name, str(p.kind), repr(p.default)) for p in ps]

    signatures = {n: params(getattr(module, n)) for n in members if inspect.isfunction(getattr(module, n, None))}
    protocol = {n: params(getattr(backends.Backend, n), skip_self=True) for n in signatures}
    out[module.NAME] = {"names": names, "missing": missing, "is_backend": isinstance(module, backends.Backend),
                        "mismatched": [n for n in signatures if signatures[n] != protocol[n]]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_both_backends_satisfy_the_protocol_with_the_same_public_names():
    pytest.importorskip("jax")
    import json

    proc = subprocess.run([sys.executable, "-c", CONFORMANCE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    tf, jax = found["tensorflow"], found["jax"]
    for name, backend in found.items():
        assert backend["is_backend"] and not backend["missing"], (name, backend["missing"])
        assert not backend["mismatched"], (name, backend["mismatched"])  # parameters as the protocol declares them
    assert tf["names"] == jax["names"]
