"""The shape of the code: rooms (subpackages) whose imports run one way, no cycle, bench/ apart.

Every import of a `utils` or `bench` module is read with `ast`, at module level and inside
functions alike (a function-level import is still a dependency; it only hides a cycle until
run time). A room may import its own modules and the rooms below it, never one above.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UTILS, BENCH, README = ROOT / "utils", ROOT / "bench", ROOT / "README.md"
REVIEW_LINES = 400  # past this, ask whether a module holds two jobs (a flag, not a target)

# The rooms from the bottom up: a room imports only the rooms before it in this list. The
# top-level modules (config, options, env) are the floor every room stands on.
ROOMS = ["utils", "course", "models", "data", "generate", "evaluate", "train", "runs", "prefer",
         "pipeline"]


def room_of(module: str) -> str:
    """'utils.data.prepare' -> 'data'; 'utils.config' -> 'utils'; 'bench.cli' -> 'bench'."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "bench"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (UTILS / parts[1]).is_dir()) else "utils"


def modules() -> dict[str, Path]:
    """Every module of utils/ and bench/ by its dotted name (packages by their __init__)."""
    found = {}
    for path in sorted([*UTILS.rglob("*.py"), *BENCH.rglob("*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """The utils/bench modules `path` (module `name`) imports anywhere in its body."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from . import x
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] in ("utils", "bench"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # from utils.runs import registry
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("utils", "bench"))
    return {m for m in found if m in modules()} - {name}


def import_graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) for name, path in modules().items()}


def test_every_room_is_in_the_layer_list():
    rooms = {p.name for p in UTILS.iterdir() if (p / "__init__.py").is_file()}
    assert rooms == set(ROOMS[1:]), f"rooms on disk {sorted(rooms)} differ from ROOMS {ROOMS[1:]}"
    flat = sorted(p.stem for p in UTILS.glob("*.py") if p.stem != "__init__")
    assert flat == ["config", "env", "options"], f"only the floor lives at utils/ top level, found {flat}"


def test_rooms_import_only_rooms_below_them():
    upward = []
    for module, targets in import_graph().items():
        here = room_of(module)
        for target in sorted(targets):
            there = room_of(target)
            if here == "bench" or there == here:
                continue
            if there == "bench" or ROOMS.index(there) > ROOMS.index(here):
                upward.append(f"{module} ({here}) imports {target} ({there})")
    assert not upward, "imports must run downwards between rooms:\n" + "\n".join(upward)


def test_nothing_in_utils_imports_bench():
    offenders = [f"{m} imports {t}" for m, ts in import_graph().items() if m.startswith("utils")
                 for t in ts if t.startswith("bench")]
    assert not offenders, "\n".join(offenders)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        graph.setdefault(room_of(module), set()).update(
            room_of(t) for t in targets if room_of(t) != room_of(module))
    return graph


def test_no_import_cycle_between_rooms_or_modules():
    assert (cycle := find_cycle(room_graph())) is None, "room cycle: " + " -> ".join(cycle)
    # Within a room, a package's __init__ imports its own modules by design; modules do not
    # import each other in a circle.
    graph = {m: {t for t in ts if not modules()[t].stem == "__init__"} for m, ts in import_graph().items()
             if modules()[m].stem != "__init__"}
    assert (cycle := find_cycle(graph)) is None, "module cycle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_should(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    assert room_of("utils.data.prepare") == "data" and room_of("utils.config") == "utils"
    assert room_of("utils.data") == "data" and room_of("bench.cli") == "bench"
    # function-level and relative imports count, in every spelling
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from . import registry\n    import utils.data.prepare\n"
                     "    from utils.train.trainer import train\n    from utils.runs import table\n")
    assert imports_of(probe, "utils.runs.probe") == {
        "utils.runs", "utils.runs.registry", "utils.data.prepare", "utils.train.trainer", "utils.runs.table"}


def test_room_inits_only_reexport_their_own_modules():
    """An __init__ gathers what notebooks import from its room; it never reaches into another room."""
    for room in ROOMS[1:]:
        tree = ast.parse((UTILS / room / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"utils/{room}/__init__.py needs a docstring: its job, its notebooks"
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert isinstance(node, ast.ImportFrom) and node.level == 1, (
                    f"utils/{room}/__init__.py: import only from this room's modules (from .x import y)")


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_within_review_size(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= REVIEW_LINES, (f"{modules()[name].relative_to(ROOT)} has {lines} lines: does it hold "
                                   "two jobs? Split it along its seams if so, never by squeezing lines")


def test_readme_map_names_every_room_and_module():
    section = README.read_text(encoding="utf-8").split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    for room in ["bench", *ROOMS[1:]]:
        assert re.search(rf"^- `(utils/)?{room}/`", section, flags=re.M), f"README's map lacks the room {room}/"
    named = set(re.findall(r"`(\w+)`", section))
    missing = sorted(p.stem for p in [*UTILS.rglob("*.py"), *BENCH.glob("*.py")]
                     if not p.stem.startswith("__") and p.stem not in named)
    assert not missing, f"README's map does not name these modules: {missing}"
