"""The format-preserving editor: each edit changes only what it means to, or nothing."""

from __future__ import annotations

import pytest

from provision.toml_edit import (
    DeleteTable,
    RenameTable,
    SetKeys,
    TomlError,
    edit_text,
    loads,
    redact,
    unified_diff,
)
from tests.config_support import removed_lines

PROVIDER = SetKeys.of(("model_providers", "ollama-gpu1"),
                      {"name": "Ollama", "base_url": "http://gpu1:11434/v1",
                       "wire_api": "responses"}, comment="added")


def test_new_table_is_appended_and_nothing_else_moves() -> None:
    old = '# mine\nmodel = "o3"  # why\n\n[tui]\nnotifications = true\n'
    new = edit_text(old, [PROVIDER])
    assert new.startswith(old)
    assert new[len(old):] == ('\n# added\n[model_providers.ollama-gpu1]\nname = "Ollama"\n'
                              'base_url = "http://gpu1:11434/v1"\nwire_api = "responses"\n')


def test_second_identical_edit_returns_the_same_text() -> None:
    once = edit_text("model = 'o3'\n", [PROVIDER])
    assert edit_text(once, [PROVIDER]) is once


def test_changed_value_keeps_its_comment_and_other_keys() -> None:
    old = ('[model_providers.x]\nname = "X"\nwire_api = "chat"   # was chat\n'
           "request_max_retries = 4\n")
    new = edit_text(old, [SetKeys.of(("model_providers", "x"), {"wire_api": "responses"})])
    assert new == old.replace('"chat"', '"responses"')


def test_unchanged_value_keeps_its_spelling() -> None:
    old = "[model_providers.x]\nname = 'X'\nbase_url = 'http://h/v1'\n"
    new = edit_text(old, [SetKeys.of(("model_providers", "x"),
                                     {"name": "X", "base_url": "http://h/v1", "wire_api": "r"})])
    assert new.startswith(old)


def test_crlf_file_stays_crlf_throughout() -> None:
    old = 'model = "o3"\r\n\r\n[tui]\r\nnotifications = true\r\n'
    new = edit_text(old, [PROVIDER])
    assert new.startswith(old)
    assert new.count("\n") == new.count("\r\n")


def test_rename_keeps_comments_position_and_sub_tables() -> None:
    old = ('[model_providers.ollama]  # old\n# my box\nname = "O"\nretries = 4\n\n'
           '[model_providers.ollama.http_headers]\nX-Team = "a"\n\n[tui]\nx = 1\n')
    new = edit_text(old, [RenameTable(("model_providers", "ollama"), "ollama-gpu1")])
    assert new == old.replace("model_providers.ollama", "model_providers.ollama-gpu1")


def test_rename_of_an_inline_table_moves_it_with_its_values() -> None:
    old = 'model_providers = { ollama = { name = "O", base_url = "http://b/v1" } }\n'
    new = edit_text(old, [RenameTable(("model_providers", "ollama"), "ollama-b")])
    assert loads(new) == {"model_providers": {"ollama-b": {"name": "O",
                                                           "base_url": "http://b/v1"}}}


def test_delete_removes_only_that_table() -> None:
    old = ('model = "o3"\n\n[profiles.fast]\nmodel = "mini"\n\n[profiles.ollama]\n'
           'model = "m"\n\n[profiles.deep]\nmodel = "o3"\n')
    new = edit_text(old, [DeleteTable(("profiles", "ollama"))])
    assert sorted(removed_lines(old, new)) == sorted(['[profiles.ollama]', 'model = "m"',
                                                       ""])
    assert loads(new)["profiles"] == {"fast": {"model": "mini"}, "deep": {"model": "o3"}}


def test_new_top_level_keys_go_after_the_last_top_level_key() -> None:
    old = '# header\n\nmodel = "o3"  # mine\n# about tui\n[tui]\nx = 1\n'
    new = edit_text(old, [SetKeys.of((), {"model_provider": "ollama"})])
    assert new == old.replace('# mine\n', '# mine\nmodel_provider = "ollama"\n')


def test_top_level_keys_without_any_go_below_the_file_header_comment() -> None:
    old = "# my config\n# (notes)\n\n# about tui\n[tui]\nx = 1\n"
    new = edit_text(old, [SetKeys.of((), {"model": "m"})])
    assert new == "# my config\n# (notes)\n\nmodel = \"m\"\n\n# about tui\n[tui]\nx = 1\n"


def test_a_table_under_an_inline_parent_is_added_inline() -> None:
    old = 'model_providers = { a = { name = "A" } }\n'
    new = edit_text(old, [PROVIDER])
    assert loads(new)["model_providers"]["a"] == {"name": "A"}
    assert loads(new)["model_providers"]["ollama-gpu1"]["wire_api"] == "responses"


def test_dotted_key_tables_are_kept_when_a_sibling_is_added() -> None:
    old = 'model_providers.mine.name = "Mine"\nmodel_providers.mine.base_url = "u"\n'
    new = edit_text(old, [PROVIDER])
    assert new.startswith(old)
    assert loads(new)["model_providers"]["mine"] == {"name": "Mine", "base_url": "u"}


def test_invalid_toml_names_line_and_column() -> None:
    with pytest.raises(TomlError) as info:
        edit_text('a = 1\n\nb = "open\n', [PROVIDER], source="config.toml")
    assert info.value.message.startswith("config.toml: invalid TOML at line 3, column 10")
    assert "\n" not in info.value.message


def test_a_key_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(TomlError, match="not a table"):
        edit_text('model_providers = "oops"\n', [PROVIDER])


def test_diff_hides_secrets_but_shows_variable_names() -> None:
    old = ('[model_providers.or]\nhttp_headers = { Authorization = "Bearer sk-live-123" }\n'
           'api_key = "abc123"\nenv_key = "OPENROUTER_KEY"\n')
    new = old + 'env_http_headers = { "X-Api-Token" = "MY_TOKEN_VAR" }\n'
    diff = unified_diff(old, new, label="config.toml")
    assert "sk-live-123" not in diff and "abc123" not in diff
    assert "OPENROUTER_KEY" in diff and "MY_TOKEN_VAR" in diff
    assert redact('base_url = "https://bob:hunter2@h/v1"') == 'base_url = "https://***@h/v1"'
