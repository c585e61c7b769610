"""The package stays untangled (issue 7, item 9): no import cycle between its modules (lazy
function-level imports included), metrics.py under 500 lines, one advisor function per rule."""
import ast
import os

import ovkit.accuracy as acc

PKG = os.path.dirname(acc.__file__)


def import_graph():
    graph = {}
    for f in sorted(os.listdir(PKG)):
        if not f.endswith('.py') or f == '__init__.py':
            continue
        tree = ast.parse(open(os.path.join(PKG, f)).read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split('.')[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[f[:-3]] = deps
    return graph


def test_no_import_cycle():
    graph = import_graph()
    assert 'dump' not in graph['onnx_dump'] and 'capture' in graph['onnx_dump']
    state = {}

    def visit(node, path):
        if state.get(node) == 'done':
            return
        assert state.get(node) != 'open', 'import cycle: ' + ' -> '.join(path + [node])
        state[node] = 'open'
        for dep in graph.get(node, ()):
            visit(dep, path + [node])
        state[node] = 'done'

    for node in graph:
        visit(node, [])


def test_module_sizes_and_rules():
    with open(os.path.join(PKG, 'metrics.py')) as f:
        assert len(f.readlines()) < 500
    from ovkit.accuracy import advisor
    names = [r.__name__ for r in advisor.RULES]
    assert all(n.startswith('rule_') for n in names) and len(set(names)) == len(names)
    documented = advisor.__doc__
    for n in names:
        assert n[len('rule_'):] in documented, n
