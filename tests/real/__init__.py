"""The real components from the shared folder, for tests and benchmarks: a real Ollama
0.32.15 (`RealOllama`), its real OCI registry (`Registry`), models made for them
(`tests.real.gguf`), and the tool run against them as a user runs it (`run_cli`).

Nothing here imitates them: servers are started as processes, each with its own port,
models folder and HOME, from a `runnable_copy` of the shared build.

Where they are: `../shared/ollama` beside the repository (as CI checks it out), or
where `OLLAMA_PROVISION_SHARED` says: the shared folder or its `ollama` folder, either
one. When the real server cannot run here (no binary, not Linux, a CPU without
AVX2/FMA/F16C) the tests that need it skip with the reason (`require_server`);
`OLLAMA_PROVISION_REQUIRE_OLLAMA=1` (CI) makes that a failure. The fixtures shared by
the tests in tests/ and tests/integration/ are in tests/conftest.py (`ollama_dist`),
the integration ones in tests/integration/conftest.py.
"""

from tests.real.cli import cli_env, interrupt_when, one_error, run_cli, start_cli
from tests.real.registry import Registry
from tests.real.server import (
    RealOllama,
    closed_proxies,
    create_from_gguf,
    free_port,
    load,
    model_facts,
    servers,
    unload,
)
from tests.real.shared import (
    REPO,
    TINY,
    require_server,
    runnable_copy,
    shared_ollama,
    why_no_server,
    writable_copy,
)

__all__ = [
    "REPO",
    "TINY",
    "RealOllama",
    "Registry",
    "cli_env",
    "closed_proxies",
    "create_from_gguf",
    "free_port",
    "interrupt_when",
    "load",
    "model_facts",
    "one_error",
    "require_server",
    "run_cli",
    "runnable_copy",
    "servers",
    "shared_ollama",
    "start_cli",
    "unload",
    "why_no_server",
    "writable_copy",
]
