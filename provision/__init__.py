"""ollama-provision: make a machine ready to run local LLMs with Ollama.

The packages are the pipeline (README, "Development"): `server` → `models` →
`hardware`, `clients`, `bundle` → `apply`, `fleet` → `commands`, over the ground
modules at this level.
"""

import sys
import types

__version__ = "0.1.0"

# httpx's own __init__ imports its command-line client (`httpx._main`: click, rich and
# pygments, some 40 ms) whenever click is installed. This tool never runs it, and every
# command that talks to a server imports httpx: an empty module stands in for it, so
# httpx defines its fallback `main` instead.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))
