"""ollama-provision: make a machine ready to run local LLMs with Ollama."""

__version__ = "0.1.0"
