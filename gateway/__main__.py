"""`python -m gateway` runs the same CLI as the `abuse-gateway` script."""

from gateway.cli import main

main()
