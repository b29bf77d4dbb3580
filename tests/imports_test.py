"""The package's imports run one way: parsed from the source, checked for cycles and layers.

Layers, bottom up: utilities → the network → data and gradient checking → the run's parts
(engine, distribution, checkpoint, monitor, ...) and serving → run orchestration → the CLIs.
A module may import its own layer or lower ones, never a higher one; no cycle at all (local
imports included); no function-local import of the package (the way to dodge a cycle), but in
the modules a command imports before TensorFlow (BEFORE_TENSORFLOW), whose functions import
the package's TensorFlow modules when they run; no other module's private names.  Every module
opens with a docstring saying its job.
"""

import ast
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tf_backprop"

LAYERS = [
    # The top-level package only names the public API; it loads modules lazily (importlib).
    (
        "utilities",
        (
            "tf_backprop",
            "tf_backprop.names",
            "tf_backprop.arguments",
            "tf_backprop.text",
            "tf_backprop.files",
        ),
    ),
    (
        "network",
        ("tf_backprop.activations", "tf_backprop.losses", "tf_backprop.model", "tf_backprop.backprop"),
    ),
    (
        "data and checking",
        ("tf_backprop.data", "tf_backprop.gradcheck", "tf_backprop.testing", "tf_backprop.explaining"),
    ),
    ("run parts and serving", ("tf_backprop.training.", "tf_backprop.serving")),
    ("run orchestration", ("tf_backprop.training.api", "tf_backprop.training")),
    ("entry points", ("tf_backprop.cli",)),
]


# What a command imports before its flags are parsed and TensorFlow loads (cli/common.py); the
# commands' tests (names_test.py) check that no TensorFlow comes with them.
BEFORE_TENSORFLOW = ("tf_backprop.cli.", "tf_backprop.training.config")


def _source_files() -> dict[str, str]:
    """module name -> file path, for tf_backprop/ and cli/ (installed as tf_backprop.cli)."""
    found = {}
    for folder, prefix in (("tf_backprop", PACKAGE), ("cli", f"{PACKAGE}.cli")):
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(directory, name), os.path.join(ROOT, folder))
                parts = relative[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join([prefix, *parts])] = os.path.join(directory, name)
    return found


MODULES = _source_files()


def _layer(module: str) -> int:
    """The index of the module's layer: the most specific prefix that names it wins."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix.endswith(".") and module.startswith(prefix))
            matches = matches or (prefix != PACKAGE and module.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module}: in no layer of imports_test.LAYERS")
    return best


def _imports(module: str, tree: ast.Module) -> list[tuple[str, ast.AST, bool]]:
    """(imported package module, node, whether at module level) for every import of the package."""
    found = []
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append((target, node, id(node) in top_level))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        graph[module] = {target for target, _, _ in _imports(module, tree) if target in MODULES}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


class ImportsTest(tf.test.TestCase):
    def test_no_cycle(self):
        cycle = _cycle(_graph())
        self.assertIsNone(cycle, f"import cycle: {' -> '.join(cycle or [])}")

    def test_the_cycle_check_can_fail(self):
        self.assertEqual(_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(_cycle({"a": {"b"}, "b": set()}))

    def test_imports_go_down_the_layers(self):
        upward = []
        for module, targets in _graph().items():
            for target in targets:
                if _layer(target) > _layer(module):
                    upward.append(
                        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
                    )
        self.assertEqual(upward, [])

    def test_layers_are_ordered_as_documented(self):
        self.assertLess(_layer("tf_backprop.model"), _layer("tf_backprop.gradcheck.mlp"))
        self.assertLess(_layer("tf_backprop.training.engine"), _layer("tf_backprop.training.api"))
        self.assertLess(_layer("tf_backprop.training.api"), _layer("tf_backprop.cli.train"))

    def test_no_function_local_imports_of_the_package(self):
        local = []
        for module, path in MODULES.items():
            if module.startswith(BEFORE_TENSORFLOW):
                continue
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            local += [f"{module}:{node.lineno} {t}" for t, node, top in _imports(module, tree) if not top]
        self.assertEqual(local, [])

    def test_local_imports_count_in_the_cycle_check(self):
        tree = ast.parse("def f():\n    from tf_backprop import model\n")
        self.assertEqual(
            _imports("tf_backprop.training.config", tree),
            [("tf_backprop.model", tree.body[0].body[0], False)],
        )

    def test_no_private_names_of_other_modules(self):
        private = []
        for module, path in MODULES.items():
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            private += _private_uses(module, tree)
        self.assertEqual(private, [])

    def test_every_module_says_its_job(self):
        missing = []
        for module, path in MODULES.items():
            with open(path, encoding="utf-8") as handle:
                docstring = ast.get_docstring(ast.parse(handle.read(), path))
            if not docstring or not docstring.splitlines()[0].strip():
                missing.append(module)
        self.assertEqual(missing, [])


def _private_uses(module: str, tree: ast.Module) -> list[str]:
    """`from tf_backprop.x import _y` and `alias._y` where alias is a package module."""
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{module}:{node.lineno} imports {target}")
                if target in MODULES:
                    aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE) and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found
