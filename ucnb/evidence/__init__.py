"""The evidence: proof roots, the run index, the report, JUnit, redaction and the work-root budget."""
