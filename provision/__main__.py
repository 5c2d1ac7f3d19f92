"""`python -m provision`: the same as the `ollama-provision` command."""

from provision.cli import main

raise SystemExit(main())
