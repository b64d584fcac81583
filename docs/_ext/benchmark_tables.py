"""Benchmark numbers read from ``benchmarks/results/*.json`` when the site is built.

The documentation never copies a measured number by hand: tables and inline values
come from the results files the benchmark scripts write, with their date, commit and
machine.

``benchmark-table`` directive (reST ``.. benchmark-table:: FILE`` or MyST
```` ```{benchmark-table} FILE ````)::

    :rows: rows                  # dotted path to a list of dicts (or a dict of dicts)
    :where: stage != extract     # optional filters, ";"-separated: key = v, key != v

    stage | model                # one column a line: key | header [| format spec]
    test_accuracy | test | .3f

``bench`` role: ``{bench}`bench_gridsearch.json:ratio:.1f``` is that value, formatted.
Dotted paths take dict keys, list indices (``rows.0.seconds``) and, in a list, the
first dict whose keys have the given values, ``&``-separated
(``rows.backbone=ViT-B/16&input=paths.vs_vgg16``).
"""

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective, SphinxRole


def _results(env, name):
    path = Path(env.config.benchmark_results_dir) / name
    if not path.is_file():
        raise ExtensionError(f"benchmark results file {path} does not exist")
    env.note_dependency(str(path))
    return json.loads(path.read_text())


def _lookup(data, dotted):
    for key in dotted.split("."):
        if isinstance(data, list) and "=" in key:  # the first row with those values
            rows = [
                row for row in data
                if isinstance(row, dict) and all(_matches(row, part) for part in key.split("&"))
            ]
            if not rows:
                raise KeyError(dotted)
            data = rows[0]
        elif isinstance(data, list):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            raise KeyError(dotted)
    return data


def _format(value, spec):
    if value is None:
        return ""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _matches(row, condition):
    if "!=" in condition:
        key, value = (part.strip() for part in condition.split("!=", 1))
        return str(row.get(key)) != value
    key, value = (part.strip() for part in condition.split("=", 1))
    return str(row.get(key)) == value


def _provenance(data):
    """A paragraph naming the results file, its date, commit and machine."""
    machine = data.get("machine", {})
    paragraph = nodes.paragraph()
    paragraph += nodes.Text("From ")
    paragraph += nodes.literal(
        text=f"benchmarks/results/{data.get('benchmark', '?')}.json"
    )
    text = f", run {str(data.get('date', '?'))[:10]}, commit "
    paragraph += nodes.Text(text)
    paragraph += nodes.literal(text=str(data.get("commit") or "?")[:7])
    if machine:
        paragraph += nodes.Text(
            f", {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"TensorFlow {machine.get('tensorflow', '?')}"
        )
    paragraph += nodes.Text(".")
    return paragraph


def _table(header, rows):
    table = nodes.table(classes=["benchmark-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    for cells, section in [(header, head)] + [(row, body) for row in rows]:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=cell)
            row += entry
        section += row
    return table


class BenchmarkTable(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {
        "rows": directives.unchanged_required,
        "where": directives.unchanged,
    }

    def run(self):
        data = _results(self.env, self.arguments[0])
        try:
            rows = _lookup(data, self.options.get("rows", "rows"))
        except (KeyError, IndexError, ValueError) as exc:
            raise self.error(f"{self.arguments[0]} has no {exc}") from exc
        if isinstance(rows, dict):  # {name: {...}}: one row per dict value
            rows = [
                {"_key": key, **value}
                for key, value in rows.items()
                if isinstance(value, dict)
            ]
        for condition in filter(None, self.options.get("where", "").split(";")):
            rows = [row for row in rows if _matches(row, condition)]
        columns = [
            [part.strip() for part in line.split("|")]
            for line in self.content
            if line.strip()
        ]
        if not columns:
            raise self.error(
                "benchmark-table needs a 'key | header [| format]' line per column"
            )
        cells = []
        for row in rows:
            cells.append([])
            for column in columns:
                key, spec = column[0], column[2] if len(column) > 2 else ""
                try:
                    value = _lookup(row, key)
                except (KeyError, IndexError, ValueError):
                    value = None
                if key == "_key":
                    value = value.replace("_", " ")
                cells[-1].append(_format(value, spec))
        return [_table([column[1] for column in columns], cells), _provenance(data)]


class BenchmarkValue(SphinxRole):
    def run(self):
        name, _, rest = self.text.partition(":")
        dotted, _, spec = rest.partition(":")
        try:
            value = _lookup(_results(self.env, name), dotted)
        except (KeyError, IndexError, ValueError, ExtensionError) as exc:
            message = self.inliner.reporter.error(
                f"bench: cannot read {dotted!r} from {name!r} ({exc})", line=self.lineno
            )
            return [self.inliner.problematic(self.rawtext, self.rawtext, message)], [
                message
            ]
        return [nodes.Text(_format(value, spec))], []


def setup(app):
    app.add_config_value("benchmark_results_dir", "", "env")
    app.add_directive("benchmark-table", BenchmarkTable)
    app.add_role("bench", BenchmarkValue())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
