"""Imports go one way: every import of brainlm_hf by its own modules follows the layer graph below, and none cycles.

The graph is read from the source with `ast` (no module is imported), every import counted: top-level ones and
the lazy ones inside functions, relative (`from .`, `from ..`) and absolute (`import brainlm_hf...`).
"""

import ast
import fnmatch
import importlib.util
import textwrap
from pathlib import Path

PACKAGE = "brainlm_hf"

# layer -> its modules (dotted, relative to brainlm_hf; "" is brainlm_hf/__init__.py). First match wins.
LAYERS = {
    # the exception classes: import nothing of the package
    "errors": ["errors"],
    # small modules that import nothing of the package but `errors`
    "leaf": ["version", "folders", "metrics", "hub_upload", "arguments", "network", "progress"],
    # the evaluate module shipped for `evaluate.load(metrics.EVALUATE_MODULE)`: a script loaded by path
    "evaluate_module": ["evaluate_modules.*"],
    "model": ["configuration_brainlm", "modeling_brainlm", "feature_extraction_brainlm"],
    "data": ["data", "data.*"],
    "inference": ["inference"],
    # the pipeline, also shipped as remote code: brainlm_hf (for file inputs) only through lazy absolute imports
    "pipeline": ["pipeline_brainlm"],
    "hub": ["hub", "convert", "publish"],
    "training": ["training", "training.*"],
    "analysis": ["analysis", "analysis.*"],
    "integrations": ["integrations", "integrations.*"],
    # registers the classes with the Auto classes and plugs the Hub loading into from_pretrained
    "package": [""],
    "cli": ["cli"],
}

# layer -> the layers its modules may import. No layer lists "package": no module imports brainlm_hf/__init__.py.
MAY_IMPORT = {
    "errors": set(),
    "leaf": {"errors"},
    "evaluate_module": {"leaf"},
    "model": {"model", "leaf", "errors"},
    "data": {"data", "model", "leaf", "errors"},
    "inference": {"model", "leaf", "errors"},
    "pipeline": {"data", "model"},
    # convert reads the A424 coordinates with data.atlas; publish ships the pipeline
    "hub": {"hub", "pipeline", "data", "model", "leaf", "errors"},
    "training": {"training", "data", "inference", "model", "leaf", "errors"},
    "analysis": {"analysis", "data", "inference", "model", "leaf", "errors"},
    "integrations": {"integrations", "analysis", "data", "inference", "model", "leaf", "errors"},
    "package": {"hub", "pipeline", "model", "leaf", "errors"},  # hub, for the loading it plugs into from_pretrained
    "cli": {"cli", "integrations", "analysis", "training", "hub", "inference", "data", "model", "leaf", "errors"},
}

# The model files are copied beside every saved checkpoint for `trust_remote_code` (transformers copies a model
# file's relative imports with it), so they import only each other along these edges, and of the leaves only
# `errors`, which imports nothing itself and travels with them.
MODEL_IMPORTS = {
    "configuration_brainlm": {"errors"},
    "feature_extraction_brainlm": {"errors"},
    "modeling_brainlm": {"configuration_brainlm", "errors"},
}


def source_root() -> Path:
    return Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])


def package_modules(root: Path) -> dict[str, Path]:
    """Dotted name (relative to the package; "" for its `__init__`) -> file, for every `.py` file under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """`(imported module, line)` of every import of the package in the module `name` (lazy ones included)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
            found += [(_relative(target), node.lineno) for target in targets]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                target = _relative(node.module)
            else:
                continue
            for alias in node.names:  # `from . import x` imports the submodule x when there is one
                submodule = f"{target}.{alias.name}" if target else alias.name
                found.append((submodule if submodule in modules else target, node.lineno))
    return found


def _relative(dotted: str) -> str:
    return dotted[len(PACKAGE) + 1 :] if dotted != PACKAGE else ""


def layer_of(name: str) -> str | None:
    for layer, patterns in LAYERS.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return layer
    return None


def import_graph(root: Path) -> dict[str, list[tuple[str, int]]]:
    modules = package_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def wrong_way_imports(root: Path) -> list[str]:
    """Every import that the layer graph forbids, named as `file:line: module (layer) imports module (layer)`."""
    offending = []
    for name, imported in import_graph(root).items():
        for target, line in imported:
            source_layer, target_layer = layer_of(name), layer_of(target)
            allowed = target_layer in MAY_IMPORT.get(source_layer, ())
            if allowed and source_layer == "model":
                allowed = target in MODEL_IMPORTS.get(name, ())
            if not allowed:
                where = f"{PACKAGE}/{(name or '__init__').replace('.', '/')}:{line}"
                offending.append(
                    f"{where}: {name or PACKAGE} ({source_layer}) imports {target or PACKAGE} ({target_layer})"
                )
    return offending


def import_cycle(root: Path) -> list[str] | None:
    """One cycle of the module graph (`[a, b, ..., a]`), or None."""
    graph = {name: sorted({target for target, _ in imported}) for name, imported in import_graph(root).items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for target in graph.get(name, ()):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in graph:
        cycle = visit(name)
        if cycle:
            return [entry or PACKAGE for entry in cycle]
    return None


def test_every_module_has_a_layer():
    unplaced = [name for name in package_modules(source_root()) if layer_of(name) is None]
    assert not unplaced, f"modules without a layer: {unplaced}; add each to LAYERS in {Path(__file__).name}"
    assert set(MAY_IMPORT) == set(LAYERS)


def test_imports_go_one_way():
    offending = wrong_way_imports(source_root())
    assert not offending, "imports against the layer graph:\n" + "\n".join(offending)


def test_the_import_graph_has_no_cycle():
    cycle = import_cycle(source_root())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_layer_graph_itself_is_one_way():
    """Apart from a layer importing itself, no two layers may import each other, even through others."""
    reach = {layer: set(allowed) - {layer} for layer, allowed in MAY_IMPORT.items()}
    for _ in reach:
        for layer in reach:
            reach[layer] |= {deeper for other in reach[layer] for deeper in reach[other]}
    assert not [layer for layer, below in reach.items() if layer in below]
    assert not [layer for layer, allowed in MAY_IMPORT.items() if "package" in allowed]


def test_the_graph_is_read_from_every_kind_of_import():
    """The graph has the lazy imports inside functions, relative imports of every level and absolute ones."""
    graph = {name: {target for target, _ in imported} for name, imported in import_graph(source_root()).items()}
    assert "data.atlas" in graph["convert"]  # a lazy `from .data.atlas import ...` inside a function
    assert "configuration_brainlm" in graph["modeling_brainlm"]  # `from .configuration_brainlm import ...`
    assert "metrics" in graph["training.pretraining"]  # `from ..metrics import ...`
    assert "metrics" in graph["evaluate_modules.brain_reconstruction.brain_reconstruction"]  # absolute import
    assert "data" in graph["training.pretraining"]  # `from ..data import X`: the subpackage's __init__
    assert "version" in graph[""]  # `from .version import __version__`


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_checks_name_a_wrong_way_import_a_cycle_and_the_package_init(tmp_path):
    root = _write_package(
        tmp_path / PACKAGE,
        {
            "__init__.py": "from .version import __version__\n",
            "version.py": "__version__ = '0'\n",
            "metrics.py": "",
            "configuration_brainlm.py": "",
            "modeling_brainlm.py": "from .configuration_brainlm import X\n",
            "feature_extraction_brainlm.py": "def f():\n    from .modeling_brainlm import Y\n",
            "hub.py": "from .convert import FAMILIES\n",
            "convert.py": "def push():\n    from .hub import push_folder\n",
            "data/__init__.py": "from .prepare import prepare_dataset\n",
            "data/prepare.py": "from .. import __version__\n",
            "analysis/forecasting.py": "from ..training.metrics import mse\n",
            "training/__init__.py": "",
            "training/metrics.py": "import brainlm_hf.analysis.forecasting\n",
        },
    )
    offending = wrong_way_imports(root)
    assert offending == [
        f"{PACKAGE}/analysis/forecasting:1: analysis.forecasting (analysis) imports training.metrics (training)",
        f"{PACKAGE}/data/prepare:1: data.prepare (data) imports {PACKAGE} (package)",
        f"{PACKAGE}/feature_extraction_brainlm:2: feature_extraction_brainlm (model) imports modeling_brainlm (model)",
        f"{PACKAGE}/training/metrics:1: training.metrics (training) imports analysis.forecasting (analysis)",
    ]
    # modules are visited in file order: analysis/ first (hub <-> convert is a second cycle)
    assert import_cycle(root) == ["analysis.forecasting", "training.metrics", "analysis.forecasting"]


def test_a_cycle_through_a_lazy_import_is_found_and_a_chain_is_not_one(tmp_path):
    root = _write_package(
        tmp_path / PACKAGE, {"a.py": "from .b import x\n", "b.py": "def f():\n    from .c import y\n"}
    )
    _write_package(root, {"c.py": ""})
    assert import_cycle(root) is None
    _write_package(root, {"c.py": "import brainlm_hf.a\n"})
    assert import_cycle(root) == ["a", "b", "c", "a"]
