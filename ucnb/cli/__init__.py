"""Every command line of ucnb (Typer apps); no logic module imports this package."""
