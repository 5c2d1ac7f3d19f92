"""The fleet inventory: what a valid one means, and one clear line for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.cli import main
from provision.fleet.inventory import DEFAULT_CONCURRENCY, load_inventory, parse_inventory

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """
[[hosts]]
url = "http://10.0.0.1:11434"
[groups.all]
[[groups.all.models]]
name = "llama3.2:1b"
"""


def test_the_shipped_example_inventory_is_valid() -> None:
    inventory = load_inventory(str(ROOT / "configs" / "fleet.toml"))
    assert len(inventory.hosts) >= 3
    assert all(h.models for h in inventory.hosts)
    gpu = [h for h in inventory.hosts if dict(h.labels).get("role") == "gpu"]
    cpu = [h for h in inventory.hosts if dict(h.labels).get("role") != "gpu"]
    assert gpu and cpu and len(gpu[0].models) > len(cpu[0].models)


def test_defaults_names_and_per_host_timeouts() -> None:
    inventory = parse_inventory(MINIMAL + """
[fleet]
concurrency = 8
read_timeout = 40

[[hosts]]
name = "slow-one"
url = "10.0.0.2"
read_timeout = 300
host_timeout = 3600
""", "f.toml")
    first, second = inventory.hosts
    assert inventory.concurrency == 8
    assert first.name == "10.0.0.1:11434" and first.address.url == "http://10.0.0.1:11434"
    assert second.address.url == "http://10.0.0.2:11434"  # OLLAMA_HOST rules
    assert (first.timeouts.read, first.timeouts.total) == (40, 0)
    assert (second.timeouts.read, second.timeouts.total) == (300, 3600)
    assert parse_inventory(MINIMAL, "f.toml").concurrency == DEFAULT_CONCURRENCY


def test_a_model_in_two_groups_is_required_when_either_requires_it() -> None:
    inventory = parse_inventory("""
[[hosts]]
url = "http://a:11434"
labels = { role = "gpu" }
[groups.base]
[[groups.base.models]]
name = "llama3.2:1b"
required = false
[groups.gpu]
match = { role = "gpu" }
[[groups.gpu.models]]
name = "LLAMA3.2:1b"
""", "f.toml")
    (only,) = inventory.hosts[0].models
    assert only.required


def test_seed_uploads_and_a_bundle_beside_the_inventory(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(MINIMAL + """
[fleet]
uploads = 2
[pull]
bundle = "models.tar"
[seed]
enabled = true
cache_dir = "cache"
cache_size = "1.5G"
""")
    inventory = load_inventory(str(path))
    assert inventory.uploads == 2
    assert inventory.pull.bundle == str(tmp_path / "models.tar")  # beside the file
    assert inventory.seed.enabled and inventory.seed.cache_size == 1_500_000_000
    assert inventory.seed.cache_dir == str(tmp_path / "cache")
    plain = parse_inventory(MINIMAL + "[seed]\ncache_size = 0\n", "f.toml")
    assert (plain.uploads, plain.seed.enabled, plain.seed.cache_size) == (4, False, 0)


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "[pull]\nbundle = 5\n", "pull.bundle: expected a path (string), got 5"),
    (MINIMAL + "[pull]\nbundel = 'x.tar'\n",
     "pull.bundel: unknown key (did you mean 'bundle'?)"),
    (MINIMAL + "[seed]\ncache_size = 'lots'\n", "seed.cache_size: expected bytes, or a size"),
    (MINIMAL + "[fleet]\nuploads = 0\n", "fleet.uploads: expected an integer >= 1"),
    (MINIMAL + "[fleet]\nconcurency = 3\n",
     "fleet.concurency: unknown key (did you mean 'concurrency'?)"),
    (MINIMAL.replace('name = "llama3.2:1b"', 'nmae = "llama3.2:1b"'),
     "groups.all.models[0].nmae: unknown key (did you mean 'name'?)"),
    (MINIMAL.replace('name = "llama3.2:1b"', 'name = "bad name!"'),
     "groups.all.models[0].name: invalid model name 'bad name!'"),
    (MINIMAL.replace('name = "llama3.2:1b"', 'choose = ["a:1b", "b:1b"]'),
     "groups.all.models[0].choose: not available in a fleet"),
    (MINIMAL.replace('url = "http://10.0.0.1:11434"', 'url = "10.0.0.1:99999"'),
     "hosts[0].url: invalid address '10.0.0.1:99999': invalid port '99999'"),
    (MINIMAL.replace('url = "http://10.0.0.1:11434"', 'name = "x"'),
     "hosts[0].url: missing"),
    (MINIMAL + '[[hosts]]\nurl = "http://10.0.0.1:11434"\n',
     "hosts[1].url: 'http://10.0.0.1:11434' is already used by hosts[0]"),
    (MINIMAL.replace("[groups.all]", '[groups.all]\nhosts = ["gpu-9"]'),
     "groups.all.hosts: no host is named 'gpu-9'"),
    (MINIMAL.replace("[groups.all]", '[groups.all]\nmatch = { role = "gpu" }'),
     "hosts[0]: '10.0.0.1:11434' is in no group"),
    (MINIMAL.replace("[groups.all]", "[groups.all]\nmatch = { role = 1 }"),
     "groups.all.match: expected a table of labels"),
    ('[[hosts]]\nurl = "a"\n[groups.x]\n',
     "groups.x: expected at least one [[groups.x.models]] table"),
    ('[[hosts]]\nurl = "a"\n', "groups: missing"),
    (MINIMAL + "[pull]\nretries = -1\n", "pull.retries: expected an integer >= 0"),
    (MINIMAL + "[hots]\n", "hots: unknown section (did you mean 'hosts'?)"),
    ("[[hosts]\n", "invalid TOML"),
    (MINIMAL + """[groups.other]
[[groups.other.models]]
name = "llama3.2:1b"
num_ctx = 8192
""", "groups.other.models[0]: 'llama3.2:1b' is also declared in "
     "groups.all.models[0] with other settings"),
])
def test_mistakes_are_one_line_naming_file_and_key(tmp_path, capsys, text, message) -> None:  # noqa: ANN001
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    code = main(["fleet", "-i", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0].startswith(f"error: {path}: {message}")
    assert "Traceback" not in err and len(err.splitlines()) <= 2


def test_missing_inventory_file_and_bad_flags_are_usage_errors(tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["fleet", "-i", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err
    assert main(["fleet", "-i", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["fleet", "-i", "x.toml", "--concurrency", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_a_password_in_a_host_url_is_never_printed(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "fleet.toml"
    path.write_text(MINIMAL.replace('url = "http://10.0.0.1:11434"',
                                    'url = "http://admin:s3cret@10.0.0.1:99999"'))
    assert main(["fleet", "-i", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid address 'http://***@10.0.0.1:99999'" in err and "s3cret" not in err
