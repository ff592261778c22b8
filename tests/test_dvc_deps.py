"""dvc.yaml lists every module a stage really runs: a missing dependency gives stale numbers."""

import ast
import re
from pathlib import Path

import yaml

from conftest import ROOT

PACKAGE = ROOT / "src" / "cardiac_sr"


def imported_modules(path: Path) -> set[str]:
    """The cardiac_sr modules (and stages/_common) a file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:  # from .x import y   /   from . import x
                found |= {mod} if mod else {a.name for a in node.names}
            elif mod.startswith("cardiac_sr"):
                rest = mod[len("cardiac_sr"):].lstrip(".")
                found |= {rest} if rest else {a.name for a in node.names}
            elif mod == "_common":
                found.add("stages/_common")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cardiac_sr."):
                    found.add(a.name.split(".")[1])
    return {m.split(".")[0] if not m.startswith("stages/") else m for m in found}


def module_file(name: str) -> Path:
    return ROOT / f"{name}.py" if name.startswith("stages/") else PACKAGE / f"{name}.py"


def closure(script: Path) -> set[str]:
    """Repo-relative paths of the script and every module it reaches by imports."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        rel = str(path.relative_to(ROOT))
        if rel in seen:
            continue
        seen.add(rel)
        todo += [module_file(m) for m in imported_modules(path) if module_file(m).is_file()]
    return seen


def stage_scripts():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = re.search(r"python (stages/\S+\.py)", stage["cmd"])
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
        yield name, ROOT / script.group(1), deps


def test_every_stage_lists_the_modules_it_imports():
    missing = {}
    for name, script, deps in stage_scripts():
        lacking = sorted(closure(script) - deps)
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml deps lack the modules these stages import: {missing}"


def test_every_data_path_in_a_command_is_a_dependency_or_an_output():
    """The data paths are passed in ``cmd``; each must be (a folder of) a dep or an out of that stage."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    unlisted = {}
    for name, stage in stages.items():
        declared = [next(iter(d)) if isinstance(d, dict) else d
                    for key in ("deps", "outs", "metrics", "plots") for d in stage.get(key, [])]
        paths = re.findall(r"--(?:prepared|degraded|external|models|metrics) (\S+)", stage["cmd"])
        assert paths, f"{name}: no data paths in its cmd"
        lacking = [p for p in paths if not any(d == p or d.startswith(p + "/") for d in declared)]
        if lacking:
            unlisted[name] = lacking
    assert not unlisted, f"paths in cmd that are neither deps nor outs: {unlisted}"


def test_no_stage_lists_code_it_does_not_run():
    """An extra code dependency re-runs a stage for nothing (and hides what it really uses)."""
    extra = {}
    for name, script, deps in stage_scripts():
        code = {d for d in deps if re.fullmatch(r"(src/cardiac_sr|stages)/\S+\.py", d)}
        if code - closure(script):
            extra[name] = sorted(code - closure(script))
    assert not extra, f"dvc.yaml deps list modules these stages never import: {extra}"


def test_no_library_module_imports_a_stage_module():
    """Only cli.py and stages/ import the stage modules; the shared core never does."""
    stage_modules = {"prepare", "degrade", "train", "evaluate", "report", "predict", "external"}
    offenders = {p.name: sorted(imported_modules(p) & stage_modules) for p in PACKAGE.glob("*.py")
                 if p.name != "cli.py" and imported_modules(p) & stage_modules}
    assert not offenders, offenders


def test_the_import_walk_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .a import x\n\ndef g():\n    from .b import y\n    from cardiac_sr.c import z\n"
                 "    import cardiac_sr.d\n    from _common import run\n")
    assert imported_modules(f) == {"a", "b", "c", "d", "stages/_common"}
    # and the real train stage reaches the losses through train.py
    assert "src/cardiac_sr/losses.py" in closure(ROOT / "stages" / "train.py")
