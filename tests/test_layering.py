"""The three floors (the ``bpfree`` commands, ``benchmarks``, ``algorithms``) import only downwards;
inside ``benchmarks`` the stages a result passes through import only earlier stages; and no modules
import each other in a circle (deferred imports inside functions count: they are circles all the same)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"algorithms": 0, "benchmarks": 1, "bpfree": 2}
# benchmarks/ by stage, in the order a result takes: shared helpers and the published numbers; data;
# meters; one run; many runs; tuning them; tables and figures from the results folder; the Section 3.3
# experiments (which draw with the table stage's figures); the verdicts.
STAGES = {"common": 0, "reference": 0, "datasets": 1, "measure": 2, "run": 3, "sweep": 4, "tuning": 5,
          "tables": 6, "claims": 7, "report": 8}


def import_graph() -> dict[str, set[str]]:
    """``{module: the project's modules it imports}`` for every module of the three floors."""
    paths = {}
    for floor in FLOORS:
        for path in (ROOT / floor).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            paths[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(parts + ([node.module] if node.module else []))
                imported |= {target, *(f"{target}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle_and_an_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    graph = import_graph()
    assert "benchmarks.run.runner" in graph["benchmarks.sweep.launchers"]  # a deferred import counts
    assert "algorithms.typed_config" in graph["algorithms.networks"]


def test_no_floor_imports_a_floor_above_it():
    graph = import_graph()
    upwards = sorted((m, t) for m, targets in graph.items() for t in targets
                     if FLOORS[t.split(".")[0]] > FLOORS[m.split(".")[0]])
    assert upwards == []


def stage(module: str) -> int:
    return STAGES[module.split(".")[1]]


def later_stage_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if m.startswith("benchmarks.") and t.startswith("benchmarks.") and stage(t) > stage(m))


def test_every_benchmarks_module_belongs_to_a_stage():
    loose = sorted(m for m in import_graph() if m.startswith("benchmarks") and
                   (m == "benchmarks" or m.split(".")[1] not in STAGES))
    assert loose == []


def test_no_stage_imports_a_later_stage():
    assert later_stage_imports({"benchmarks.run.runner": {"benchmarks.tables.figures"}}) == [
        ("benchmarks.run.runner", "benchmarks.tables.figures")]  # the rule sees a real violation
    assert later_stage_imports(import_graph()) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(import_graph()) == []
