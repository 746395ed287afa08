"""The runner side: the CLI process around papermill (parameters, execution stages, progress, suites)."""

import sys

# nbformat imports jsonschema, which imports rfc3987-syntax when it is installed (JupyterLab's
# jupyter-events pulls it in), and that compiles a Lark grammar at import time: seconds of CPU per
# run for an IRI format checker nothing here uses (nbformat validates without format checks). A
# None in sys.modules makes that optional import fail, and jsonschema goes on without it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
