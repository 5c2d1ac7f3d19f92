"""`python -m tests.double --port 11434`: serve the Ollama test double (see `cli`)."""

from tests.double.cli import main

raise SystemExit(main())
