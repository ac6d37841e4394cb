"""`python -m ocifs` runs the command line."""

from ocifs.cli import main

raise SystemExit(main())
