"""`python -m gateway` runs the same CLI as the `abuse-gateway` script."""

from gateway.cli import main

# Guarded: the intake process is spawned, and spawn re-imports __main__ under another name.
if __name__ == "__main__":
    main()
