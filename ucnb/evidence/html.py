"""The proof root's HTML page: nbconvert's lab template without code, made self-contained.

One file a reviewer can open anywhere, offline: no scripts at all (the page needs none: MathJax,
require.js and nbconvert's Mermaid loader with its CDN imports are dropped, empty script tags
too), no remote reference of any kind (stylesheet links, remote src/href attributes, CSS
url()/@import and the URLs in the template's CSS comments are removed), and a URL that is only
text in the page (a lab address in a table) is written with its colon as a character reference,
so it reads the same but the file holds no `http://` a scanner or browser could take for a
reference.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any

SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.S | re.I)
UNCLOSED_SCRIPT = re.compile(r"<script\b[^>]*/?>", re.I)
STYLE = re.compile(r"(<style\b[^>]*>)(.*?)(</style\s*>)", re.S | re.I)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
CSS_IMPORT = re.compile(r"@import\b[^;]*;?", re.I)
CSS_REMOTE_URL = re.compile(r"url\(\s*(['\"]?)\s*(?:https?:)?//[^)]*\)", re.I)
REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*(['\"]?)\s*(?:https?:)?//[^>]*>", re.I)
REMOTE_ATTR = re.compile(
    r"\s(?:src|href|srcset|poster|action|formaction|data|background|cite|longdesc|manifest)\s*=\s*"
    r"(?:(['\"])\s*(?:https?:)?//.*?\1|(?:https?:)?//[^\s>]*)", re.I | re.S)
SCHEME = re.compile(r"\b(https?):(?=//)", re.I)


# One exporter for the process, and nbconvert's exporters keep state while they render: lanes
# side by side in one suite process take turns.
EXPORTING = threading.Lock()


@functools.cache
def exporter() -> Any:
    """nbconvert's exporter, built once (its imports and templates cost most of an export)."""
    from nbconvert import HTMLExporter

    built = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                         exclude_output_prompt=True, embed_images=True)
    built.mathjax_url = ""
    built.require_js_url = ""
    return built


def prewarm() -> None:
    """Build the exporter and render a small notebook shaped like a sealed one (compiles the
    templates, the markdown renderer's and the HTML parser's lazy tables and regexes) while a
    lane runs, so the seal at its end pays only for its own page."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    sample = '<div style="x"><table><tr><td>a &amp; b&#10;&lt;c&gt; &quot;d&quot;</td></tr></table></div>'
    notebook = new_notebook(cells=[
        new_markdown_cell(sample), new_markdown_cell("## heading\n\n*text* `code`\n\n" + sample),
        new_code_cell("", outputs=[new_output("display_data", data={"text/html": sample,
                                                                    "text/plain": "x"})])])
    with EXPORTING:
        self_contained(exporter().from_notebook_node(notebook)[0])


def self_contained(page: str) -> str:
    """The page without scripts and without any remote reference (see the module's docstring)."""
    page = SCRIPT.sub("", page)
    page = UNCLOSED_SCRIPT.sub("", page)
    page = STYLE.sub(lambda m: m.group(1) + _clean_css(m.group(2)) + m.group(3), page)
    page = REMOTE_LINK.sub("", page)
    page = REMOTE_ATTR.sub("", page)
    # Whatever URL is left is text (or inside a data: URI, where a character reference decodes
    # as well); CSS does not decode references, so <style> blocks get percent-encoding instead.
    parts = STYLE.split(page)
    out = []
    for i, part in enumerate(parts):
        if i % 4 == 2:   # the CSS of a <style> block (split yields open tag, body, close tag)
            out.append(SCHEME.sub(r"\1%3A", part))
        elif i % 4 == 0:
            out.append(SCHEME.sub(r"\1&#58;", part))
        else:
            out.append(part)
    return "".join(out)


def _clean_css(css: str) -> str:
    css = CSS_COMMENT.sub("", css)
    css = CSS_IMPORT.sub("", css)
    return CSS_REMOTE_URL.sub("none", css)


def export(notebook: Any, html_path: Path, base_dir: Path) -> None:
    """Write `notebook` (a NotebookNode) as the self-contained page; images a markdown cell links
    relative to `base_dir` are inlined. The page's title is the notebook's `metadata.title`."""
    with EXPORTING:
        body, _ = exporter().from_notebook_node(
            notebook, resources={"metadata": {"name": str(notebook.metadata.get("title") or html_path.stem),
                                              "path": str(base_dir)}})
    html_path.write_text(self_contained(body))
