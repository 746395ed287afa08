"""The runner side: the CLI process around papermill (parameters, execution stages, progress, suites)."""
