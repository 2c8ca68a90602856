"""`python -m pi_agent` runs the command line."""

from pi_agent.cli import main

raise SystemExit(main())
