"""`python -m gateway.cli`, as before the CLI became a package."""

from gateway.cli import main

# Guarded like gateway/__main__.py: spawn re-imports __main__ under another name.
if __name__ == "__main__":
    main()
