"""Settings parsing: every field declares its group, help and allowed values, and a value
outside them is one SettingError naming the setting as the user wrote it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.config import (
    GROUPS,
    SettingError,
    Settings,
    allowed,
    build_parser,
    env_name,
    flag_name,
    load_settings,
    settings_to_environ,
)

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def test_every_setting_declares_group_help_and_is_named_both_ways() -> None:
    for f in FIELDS.values():
        assert f.metadata, f"{f.name}: declare it with setting(default, GROUP, help, ...)"
        assert f.metadata["group"] in GROUPS, f.name
        assert f.metadata["help"].strip(), f.name
        assert env_name(f) == f.name.upper() and flag_name(f) == "--" + f.name.replace("_", "-")


def test_every_number_has_a_lower_bound_and_every_default_is_allowed() -> None:
    for f in FIELDS.values():
        if f.type in ("int", "float"):
            assert f.metadata["minimum"] is not None or f.metadata["above"] is not None, f.name
    # The defaults pass their own checks: loading each default back as a string is a no-op.
    assert load_settings([], settings_to_environ(Settings())) == Settings()


@pytest.mark.parametrize(
    ("env", "named", "says"),
    [
        ({"PORT": "abc"}, "PORT", "an integer from 1 to 65535"),
        ({"PORT": "0"}, "PORT", "an integer from 1 to 65535"),
        ({"PORT": "70000"}, "PORT", "an integer from 1 to 65535"),
        ({"PORT": "80.5"}, "PORT", "an integer"),
        ({"WORKERS": "0"}, "WORKERS", "from 1 to 256"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "one of debug, info, warning, error"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "one of text, json"),
        ({"MAX_BATCH_EVENTS": "-5"}, "MAX_BATCH_EVENTS", "at least 1"),
        ({"SSE_PING_SECONDS": "0"}, "SSE_PING_SECONDS", "greater than 0"),
        ({"IDLE_TIMEOUT_SECONDS": "nan"}, "IDLE_TIMEOUT_SECONDS", "a number"),
        ({"IDLE_TIMEOUT_SECONDS": "inf"}, "IDLE_TIMEOUT_SECONDS", "a number"),
        ({"DATABASE_CONNECT_TIMEOUT": "-1"}, "DATABASE_CONNECT_TIMEOUT", "at least 0"),
        ({"INSECURE": "maybe"}, "INSECURE", "one of 1, 0, true, false"),
        ({"DATABASE_URL": "mysql://x@h/db"}, "DATABASE_URL", "postgresql://"),
        ({"DATABASE_URL": "postgresql://h:port/db"}, "DATABASE_URL", "postgresql://"),
        ({"HOST": "   "}, "HOST", "non-empty"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS", "scheme://host"),
        ({"POOL_MIN_SIZE": "20"}, "POOL_MIN_SIZE", "exceeds its maximum (10)"),
        ({"BREAKDOWN_ROLLUPS": "-1"}, "BREAKDOWN_ROLLUPS", "at least 0"),
        ({"BREAKDOWN_ROLLUPS": "many"}, "BREAKDOWN_ROLLUPS", "an integer"),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_what_is_allowed(env: dict[str, str], named: str, says: str) -> None:
    with pytest.raises(SettingError) as raised:
        load_settings([], env)
    message = str(raised.value)
    assert named in message and says in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "abc"], "--port"),
        (["--log-level", "verbose"], "--log-level"),
        (["--log-format", "xml"], "--log-format"),
        (["--workers", "0"], "--workers"),
        (["--max-batch-events", "-5"], "--max-batch-events"),
        (["--pool-max-size", "1"], "--pool-max-size"),
        (["--breakdown-rollups", "-1"], "--breakdown-rollups"),
    ],
)
def test_a_bad_flag_names_the_flag(argv: list[str], named: str) -> None:
    with pytest.raises(SettingError, match=named):
        load_settings(argv, {})


def test_the_flag_wins_over_the_environment_and_is_checked_alone() -> None:
    assert load_settings(["--port", "9000"], {"PORT": "8001"}).port == 9000
    # A bad variable is still reported even when a flag would override it: the
    # environment is the deployment's configuration and a typo there is a bug.
    with pytest.raises(SettingError, match="PORT"):
        load_settings(["--port", "9000"], {"PORT": "x"})


def test_values_are_typed_and_normalised() -> None:
    s = load_settings(
        [],
        {
            "PORT": " 8080 ",
            "LOG_LEVEL": "DEBUG",
            "INSECURE": "yes",
            "SSE_PING_SECONDS": "0.5",
            "ALLOWED_ORIGINS": "https://a.example, http://b.example:8080",
            "DATABASE_URL": "postgres://u:p@db:5433/x",
        },
    )
    assert s.port == 8080 and isinstance(s.port, int)
    assert s.log_level == "debug" and s.insecure is True and s.sse_ping_seconds == 0.5
    assert s.allowed_origins == ("https://a.example", "http://b.example:8080")
    assert load_settings([], {"INSECURE": "off"}).insecure is False
    assert load_settings(["--insecure"], {}).insecure is True


def test_token_files_are_read_and_a_missing_one_is_a_setting_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\nsecond-token\n")
    assert load_settings([], {"INGEST_TOKENS": f"@{tokens}"}).ingest_tokens == ("first-token", "second-token")
    with pytest.raises(SettingError, match="cannot read"):
        load_settings([], {"READ_TOKENS": f"@{tmp_path / 'missing'}"})


def test_a_bad_token_or_password_is_never_echoed() -> None:
    with pytest.raises(SettingError) as raised:
        load_settings([], {"DATABASE_URL": "mysql://user:hunter2@h/db"})
    assert "hunter2" not in str(raised.value)


def test_settings_survive_the_trip_through_the_environment_to_workers() -> None:
    s = load_settings(["--port", "9001", "--insecure", "--ingest-tokens", "a-token,b-token", "--sse-ping-seconds", "2.5"], {})
    assert load_settings([], settings_to_environ(s)) == s


def test_help_groups_every_setting_under_its_heading() -> None:
    parser = build_parser()
    titles = [g.title for g in parser._action_groups]
    assert list(GROUPS) == [t for t in titles if t in GROUPS]
    by_group = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    for f in FIELDS.values():
        assert f.name in by_group[f.metadata["group"]], f.name
    text = " ".join(parser.format_help().split())
    assert "PORT" in text and "an integer from 1 to 65535" in text and "one of text, json" in text


def test_allowed_reads_as_a_phrase() -> None:
    assert allowed(FIELDS["port"]) == "an integer from 1 to 65535"
    assert allowed(FIELDS["log_format"]) == "one of text, json"
    assert allowed(FIELDS["hub_poll_seconds"]) == "a number greater than 0"


def test_the_settings_page_lists_every_setting_in_its_group() -> None:
    section = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for f in FIELDS.values():
        heading = section.index(f"**{f.metadata['group'][0].upper()}{f.metadata['group'][1:]}**")
        row = section.index(f"| `{env_name(f)}` | `{flag_name(f)}` |")
        following = [section.find(f"**{g[0].upper()}{g[1:]}**", heading + 1) for g in GROUPS]
        assert heading < row < min([p for p in following if p > heading] or [len(section)]), f.name
