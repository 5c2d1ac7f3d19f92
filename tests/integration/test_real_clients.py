"""The other tools pointed at a real server by `env` and `config --client`, each proven by
the real tool (installed from PyPI with the test extra) making real requests as its own
process: the Ollama SDK, the OpenAI SDK, g4f's Ollama provider, DB-GPT's config loader
with its Ollama proxy (chat) and Ollama embeddings; `apply` with `[clients]`.

Each tool runs in a process whose environment is only what `eval "$(ollama-provision env)"`
(or the written config) gives it, plus proxies pointing at a closed loopback port: a
request that is not for the server fails at once instead of leaving the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.github_env import github_env_vars
from tests.real import REPO, RealOllama, create_from_gguf, run_cli

REQUIRE_ENV = "OLLAMA_PROVISION_REQUIRE_CLIENTS"
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost,::1"}
TOOLS = {"ollama": "ollama", "openai": "openai", "g4f": "g4f", "dbgpt": "dbgpt",
         "dbgpt-ext": "dbgpt_ext"}


def need(*tools: str) -> None:
    """Skip (or, with OLLAMA_PROVISION_REQUIRE_CLIENTS=1 as in CI, fail) without the tool."""
    missing = [t for t in tools if importlib.util.find_spec(TOOLS[t]) is None]
    if not missing:
        return
    reason = f"not installed: {', '.join(missing)} (pip install -e '.[test]')"
    if {"dbgpt", "dbgpt-ext"} & set(missing) and sys.version_info >= (3, 12):
        reason += "; DB-GPT installs only on Python 3.11 and older (it pins aiohttp 3.8.4)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def tool(env: dict[str, str], script: str, *, setup: str = "", cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`SETUP; python -c SCRIPT` in bash: the tool as a user's shell would start it."""
    command = f"{setup}\nexec {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    done = subprocess.run(["bash", "-c", command], env={**env, **NO_NETWORK},
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=str(cwd or REPO))
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def evaluated(*args: str) -> str:
    """The shell line a user puts before the tool."""
    cli = f"{shlex.quote(sys.executable)} -m provision env {' '.join(map(shlex.quote, args))}"
    return f'eval "$({cli})"'


@pytest.fixture(scope="module")
def embed_model(real_server: RealOllama, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`tiny` with a pooling type: Ollama then serves it as an embedding model."""
    import gguf

    from tests.real import shared_ollama

    path = tmp_path_factory.mktemp("embed") / "tiny-embed.gguf"
    reader = gguf.GGUFReader(shared_ollama() / "tiny.gguf")
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for field in reader.fields.values():
        if field.name != "general.architecture" and not field.name.startswith("GGUF."):
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_uint32(f"{arch}.pooling_type", 1)  # mean pooling
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    create_from_gguf(real_server, "tiny-embed", path)
    assert real_server.api("/api/show", {"model": "tiny-embed"})["capabilities"] == \
        ["embedding"]
    return "tiny-embed:latest"


# --- env: the SDKs read the exported variables ---------------------------------------------

OLLAMA_SDK = """
import ollama
client = ollama.Client()  # OLLAMA_HOST, as the SDK reads it
print(sorted(m.model for m in client.list().models))
reply = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}],
                    options={"num_predict": 4})
print(repr(reply.message.content), reply.done)
"""

OPENAI_SDK = """
import openai
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY
print(sorted(m.id for m in client.models.list()))
reply = client.chat.completions.create(model="tiny", max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}])
print(repr(reply.choices[0].message.content), reply.choices[0].finish_reason)
"""

# g4f's get_models() first lists ollama.com's cloud models (requests.get to the internet),
# then the local server's from OLLAMA_HOST/OLLAMA_PORT. The internet one alone is answered
# here with no models; everything else is g4f's own code.
G4F = """
import asyncio, requests
real_get = requests.get
class NoCloud:
    def json(self):
        return {"models": []}
def get(url, *args, **kwargs):
    return NoCloud() if url.startswith("https://ollama.com/") else real_get(url, *args, **kwargs)
requests.get = get
from g4f.Provider.local.Ollama import Ollama
print(Ollama.get_local_base_url())
print(sorted(Ollama.get_models()))
async def chat():
    parts = []
    async for chunk in Ollama.create_async_generator(
            "tiny:latest", [{"role": "user", "content": "hi"}], max_tokens=4, stream=False):
        if isinstance(chunk, str):
            parts.append(chunk)
    return "".join(parts)
print(repr(asyncio.run(chat())))
"""


def test_env_then_the_ollama_sdk_lists_and_chats(real_server: RealOllama, user_env) -> None:
    need("ollama")
    done = tool(user_env, OLLAMA_SDK, setup=evaluated("--host", real_server.url))
    models, reply = done.stdout.splitlines()
    assert "tiny:latest" in models
    assert reply.endswith(" True") and len(reply) > len("'' True")


def test_env_then_the_openai_sdk_lists_and_chats(real_server: RealOllama, user_env) -> None:
    need("openai")
    done = tool(user_env, OPENAI_SDK, setup=evaluated("--host", real_server.url))
    models, reply = done.stdout.splitlines()
    assert "tiny:latest" in models
    assert reply.endswith(" length")  # 4 tokens asked, 4 given: the server answered


def test_env_g4f_then_g4fs_ollama_provider_lists_and_chats(real_server: RealOllama,
                                                           user_env) -> None:
    need("g4f")
    done = tool(user_env, G4F, setup=evaluated("--host", real_server.url, "--client", "g4f"))
    base, models, reply = done.stdout.splitlines()
    assert base == f"{real_server.url}/v1"  # built from OLLAMA_HOST + OLLAMA_PORT
    assert "tiny:latest" in models
    assert len(reply) > 2


def test_ollamas_own_form_and_g4fs_split_conflict_and_the_user_chooses(
        real_server: RealOllama, user_env) -> None:
    both = run_cli(user_env, "env", "--host", real_server.url, "--client", "ollama",
                   "--client", "g4f")
    assert both.returncode == 2 and both.stdout == ""
    assert f"ollama reads OLLAMA_HOST={real_server.host}" in both.stderr
    assert f"g4f reads OLLAMA_HOST=127.0.0.1 with OLLAMA_PORT={real_server.port}" \
        in both.stderr
    # Each alone works for its own tool (shown above for g4f); the SDK with Ollama's form:
    need("ollama")
    tool(user_env, OLLAMA_SDK, setup=evaluated("--host", real_server.url, "--client", "ollama"))


def test_a_clash_with_the_users_environment_is_kept_and_reported(
        real_server: RealOllama, user_env) -> None:
    need("openai")
    env = {**user_env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
           "OPENAI_API_KEY": "sk-users-real-key"}
    shown = run_cli(env, "env", "--host", real_server.url)
    assert shown.returncode == 1
    assert "OPENAI_BASE_URL is already set here to 'http://127.0.0.1:9/v1'" in shown.stderr
    assert "OPENAI_API_KEY is already set here (its value not shown)" in shown.stderr
    assert "OPENAI_BASE_URL" not in shown.stdout and "OPENAI_API_KEY" not in shown.stdout
    assert "sk-users-real-key" not in shown.stdout + shown.stderr
    assert "export OLLAMA_HOST=" in shown.stdout  # the rest is still written
    # --override replaces both, and the SDK then reaches the server.
    tool(env, OPENAI_SDK, setup=evaluated("--host", real_server.url, "--override"))


# --- DB-GPT: its own config loader reads what `config --client dbgpt` wrote ----------------

DBGPT = """
import sys
from dbgpt.core import ModelMessage, ModelRequest
from dbgpt.model import scan_model_providers
from dbgpt.model.parameter import ModelsDeployParameters
from dbgpt.model.proxy.llms.ollama import OllamaLLMClient
from dbgpt.util.configure import ConfigurationManager
from dbgpt_ext.rag.embeddings.ollama import OllamaEmbeddings


def show(*values):
    # DB-GPT prints lines of its own ("Setting random seed to 42" where some
    # optional packages are installed): mark ours so the test reads only them.
    print("RESULT", *values)


scan_model_providers()  # as DB-GPT's webserver does before loading its config
config = ConfigurationManager.from_file(sys.argv[1])
models = config.parse_config(ModelsDeployParameters, prefix="models")
show(models.default_llm, models.default_embedding)
llm = next(m for m in models.llms if m.name == models.default_llm)
show(type(llm).__name__, llm.api_base)
client = OllamaLLMClient.new_client(llm)
request = ModelRequest.build_request(llm.name, [ModelMessage.build_human_message("hi")])
last = list(client.sync_generate_stream(request))[-1]
show(last.error_code, repr(last.text))
if models.embeddings:
    embedding = next(m for m in models.embeddings if m.name == models.default_embedding)
    show(type(embedding).__name__, embedding.api_url)
    vector = OllamaEmbeddings.from_parameters(embedding).embed_query("hello")
    show(len(vector))
"""


def dbgpt_results(stdout: str) -> list[str]:
    """The lines the DBGPT script printed itself, without their mark."""
    return [line.removeprefix("RESULT ") for line in stdout.splitlines()
            if line.startswith("RESULT ")]


USERS_DBGPT = """\
# DB-GPT configuration (mine)
[system]
language = "${env:DBGPT_LANG:-en}"
api_keys = []
encrypt_key = "your_secret_key"

# Model Configurations
[models]
[[models.llms]]
name = "deepseek-chat"   # the cloud one, for long answers
provider = "proxy/deepseek"
api_key = "${env:DEEPSEEK_API_KEY}"

[[models.embeddings]]
name = "BAAI/bge-large-zh-v1.5"
provider = "hf"
# path = "/data/models/bge-large-zh-v1.5"

[rag]
chunk_size = 1000
"""


def test_config_dbgpt_then_dbgpts_loader_and_ollama_proxy_chat_and_embed(
        real_server: RealOllama, embed_model: str, user_env, tmp_path: Path) -> None:
    need("dbgpt", "dbgpt-ext", "ollama")
    path = tmp_path / "dbgpt-proxy-ollama.toml"
    path.write_text(USERS_DBGPT)
    done = run_cli(user_env, "config", "--client", "dbgpt", "tiny", "--embedding-model",
                   "tiny-embed", "--set-default", "--output", str(path), "--host",
                   real_server.url)
    assert done.returncode == 0, done.stderr
    assert f"use it: dbgpt start webserver --config {path}" in done.stdout
    text = path.read_text()
    # Every byte of the user's file is still there, in order; only entries were added.
    kept = iter(text.splitlines())
    assert all(any(line == other for other in kept) for line in USERS_DBGPT.splitlines())
    env = {**user_env, "DEEPSEEK_API_KEY": "placeholder"}  # the user's own entry needs it
    script = f"import sys; sys.argv[1:] = [{str(path)!r}]\n" + DBGPT
    out = dbgpt_results(tool(env, script, cwd=tmp_path).stdout)
    assert out[0] == "tiny tiny-embed"
    assert out[1] == f"OllamaDeployModelParameters {real_server.url}"
    assert out[2].startswith("0 ") and len(out[2]) > 4  # error_code 0 and some text
    assert out[3] == f"OllamaEmbeddingDeployModelParameters {real_server.url}"
    assert out[4] == "64"  # tiny's embedding width, computed by the server


def test_dbgpts_default_api_base_reads_ollama_api_base_from_env(
        real_server: RealOllama, user_env, tmp_path: Path) -> None:
    """A proxy/ollama model without api_base: DB-GPT reads OLLAMA_API_BASE (base-url)."""
    need("dbgpt", "dbgpt-ext", "ollama")
    path = tmp_path / "dbgpt.toml"
    path.write_text('[models]\n[[models.llms]]\nname = "tiny"\nprovider = "proxy/ollama"\n')
    script = f"import sys; sys.argv[1:] = [{str(path)!r}]\n" + DBGPT
    setup = evaluated("--host", real_server.url, "--client", "base-url")
    out = dbgpt_results(tool(user_env, script, setup=setup, cwd=tmp_path).stdout)
    assert out[1] == f"OllamaDeployModelParameters {real_server.url}"
    assert out[2].startswith("0 ")


# --- apply [clients] -----------------------------------------------------------------------


def test_apply_clients_writes_dbgpt_and_github_env_for_later_steps(
        real_server: RealOllama, embed_model: str, user_env, tmp_path: Path) -> None:
    need("openai", "dbgpt", "dbgpt-ext")
    manifest = tmp_path / "manifest.toml"
    dbgpt = tmp_path / "dbgpt.toml"
    manifest.write_text(f"""\
[server]
host = "{real_server.url}"

[[models]]
name = "tiny"

[[models]]
name = "tiny-embed"

[clients]
codex = false
dbgpt = {{ path = "{dbgpt}" }}
env = {{ for = ["ollama", "openai"] }}

[verify]
num_predict = 4
""")
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=1\n")
    env = {**user_env, "GITHUB_ACTIONS": "true", "GITHUB_ENV": str(github_env)}
    first = run_cli(env, "apply", "--json", "-f", str(manifest))
    assert first.returncode == 0, first.stderr
    steps = {s["name"]: s for s in json.loads(first.stdout)["steps"]}
    assert "configure" not in steps  # codex = false
    assert steps["dbgpt"]["status"] == "changed"
    assert steps["dbgpt"]["data"]["models"] == {"chat": "tiny:latest",
                                               "embedding": "tiny-embed:latest"}
    assert steps["env"]["status"] == "changed"
    # A later workflow step: GitHub reads $GITHUB_ENV into its environment.
    later = {**user_env, **github_env_vars(github_env.read_text())}
    assert later["OLLAMA_HOST"] == real_server.host and later["EARLIER"] == "1"
    done = tool(later, OPENAI_SDK)
    assert "tiny:latest" in done.stdout
    script = f"import sys; sys.argv[1:] = [{str(dbgpt)!r}]\n" + DBGPT
    out = dbgpt_results(tool(user_env, script, cwd=tmp_path).stdout)
    assert out[0] == "tiny:latest tiny-embed:latest" and out[4] == "64"
    # Run again in that later step: nothing changes.
    second = run_cli({**env, **github_env_vars(github_env.read_text())}, "apply", "--json",
                     "-f", str(manifest))
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["changed"] is False, [s for s in doc["steps"] if s["changed"]]

