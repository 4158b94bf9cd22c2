"""`snakemake --report`: a self-contained HTML report of the tiny run that opens offline.

Builds the report from the shared tiny run (fixture ``tiny_full_run``), then reads the data the
report page embeds: the results (each a base64 data URI), the rule graph and the runtimes.
Budget: about 10 s after the shared run.
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_snakemake
from workflow import paths

pytestmark = pytest.mark.slow

# Tag attributes through which a page loads something else.
LOADING_ATTRIBUTES = {
    "script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "embed": "src",
    "object": "data", "audio": "src", "video": "src",
}


class ExternalResources(HTMLParser):
    """Collects every resource the page would fetch from another host."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = LOADING_ATTRIBUTES.get(tag)
        for name, value in attrs:
            if name == wanted and value and re.match(r"^(https?:)?//", value.strip(), flags=re.IGNORECASE):
                self.external.append(f"<{tag} {name}={value}>")


def embedded_json(html: str, script_id: str, variable: str) -> dict:
    """The JSON value assigned to ``variable`` inside ``<script id="script_id">``."""
    match = re.search(rf'<script id="{script_id}">\s*var {variable} = (.*?);\s*</script>', html, flags=re.DOTALL)
    assert match, f"report has no <script id={script_id!r}> with var {variable}"
    return json.loads(match[1])


@pytest.fixture(scope="module")
def report_html(tiny_full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    # written outside the shared working directory, which other tests read
    report = tmp_path_factory.mktemp("report") / "report.html"
    run_snakemake(tiny_full_run, f"--report={report}", timeout=300)
    return report.read_text()


def decoded_results(html: str) -> dict[str, bytes]:
    """Every result the report embeds: {path relative to the working directory: file bytes}."""
    results = embedded_json(html, "results", "results")
    return {path: base64.b64decode(entry["data_uri"].split("base64,", 1)[1]) for path, entry in results.items()}


def test_report_embeds_the_results_table(report_html: str, tiny_full_run: Path) -> None:
    results = decoded_results(report_html)
    table1 = paths.TABLE1.format(ext="csv")
    assert table1 in results, sorted(results)
    assert results[table1] == (tiny_full_run / table1).read_bytes()


def test_report_embeds_qc_tables_and_mosaics(report_html: str, tiny_full_run: Path) -> None:
    results = decoded_results(report_html)
    for qc_table in sorted(tiny_full_run.glob(paths.PREPROCESS_QC.format(cohort="*"))):
        relative = str(qc_table.relative_to(tiny_full_run))
        assert results.get(relative) == qc_table.read_bytes(), relative
    # each model-ready batch folder's mosaics (the report's patterns pick them out of the folder)
    mosaic_prefix = paths.PREPROCESS_BATCH.split("{")[0]
    mosaics = [name for name in results if name.startswith(mosaic_prefix) and "/model_ready/batch-" in name
               and name.endswith("_mosaic.png")]
    assert mosaics, sorted(results)
    assert all(results[name].startswith(b"\x89PNG") for name in mosaics)


def test_report_has_rule_graph_and_runtimes(report_html: str) -> None:
    rule_graph = json.dumps(embedded_json(report_html, "rulegraph", "rulegraph_spec"))
    runtimes = embedded_json(report_html, "runtimes", "runtimes_spec")["data"]["values"]
    for rule in ("preprocess", "build_table", "embed_headers", "pretrain", "finetune", "evaluate"):
        assert rule in rule_graph
    timed_rules = {entry["rule"] for entry in runtimes}
    assert {"pretrain", "finetune", "evaluate"} <= timed_rules, timed_rules


def test_report_loads_nothing_from_the_network(report_html: str) -> None:
    parser = ExternalResources()
    parser.feed(report_html)
    assert parser.external == []
    assert 'id="workflow-desc"' in report_html and "CITab reproduction" in report_html
