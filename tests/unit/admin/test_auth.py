"""The admin API's token: configured once, compared whole, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ext_proc.admin.auth import HOW_TO_CONFIGURE, PERMISSION_DENIED, UNAUTHENTICATED, TokenError, TokenSource

TOKEN = "0123456789abcdef-token"


def bearer(value: str | bytes) -> list[tuple[str, str | bytes]]:
    return [("user-agent", "x"), ("authorization", value)]


def test_the_right_token_passes_and_anything_else_is_unauthenticated() -> None:
    tokens = TokenSource({"MODELGUARD_ADMIN_TOKEN": TOKEN})
    assert tokens.configured and tokens.source == "MODELGUARD_ADMIN_TOKEN"
    assert tokens.check(bearer(f"Bearer {TOKEN}")) is None
    assert tokens.check(bearer(f"bearer {TOKEN}".encode())) is None
    for wrong in ("Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", f"Basic {TOKEN}", "Bearer ", TOKEN, ""):
        refusal = tokens.check(bearer(wrong))
        assert refusal is not None and refusal.code == UNAUTHENTICATED
        assert TOKEN not in refusal.message
    refusal = tokens.check([])
    assert refusal is not None and refusal.code == UNAUTHENTICATED


def test_no_token_configured_refuses_every_change_saying_how() -> None:
    refusal = TokenSource({}).check(bearer(f"Bearer {TOKEN}"))
    assert refusal is not None and (refusal.code, refusal.message) == (PERMISSION_DENIED, HOW_TO_CONFIGURE)
    assert "MODELGUARD_ADMIN_TOKEN" in HOW_TO_CONFIGURE and "--admin-token-file" in HOW_TO_CONFIGURE


@pytest.mark.parametrize(
    ("value", "words"),
    [("tiny-1", "shorter than 16"), ("with space inside it!", "printable ASCII"), ("é" * 20, "printable ASCII")],
)
def test_unusable_tokens_are_refused_at_start_without_showing_them(value: str, words: str) -> None:
    with pytest.raises(TokenError, match=words) as refused:
        TokenSource({"MODELGUARD_ADMIN_TOKEN": value})
    assert value not in str(refused.value)


def test_both_sources_at_once_is_a_mistake(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    with pytest.raises(TokenError, match="not both"):
        TokenSource({"MODELGUARD_ADMIN_TOKEN": TOKEN}, path)


def test_a_token_file_is_followed_and_a_bad_rotation_keeps_the_last_good_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    tokens = TokenSource({}, path)
    assert tokens.source == str(path) and tokens.check(bearer(f"Bearer {TOKEN}")) is None
    path.write_text("another-token-0123456789")
    assert tokens.check(bearer("Bearer another-token-0123456789")) is None
    assert tokens.check(bearer(f"Bearer {TOKEN}")) is not None
    path.unlink()
    assert tokens.check(bearer("Bearer another-token-0123456789")) is None
    path.write_text("tiny")
    assert tokens.check(bearer("Bearer another-token-0123456789")) is None


def test_an_unreadable_token_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read the admin token file"):
        TokenSource({}, tmp_path / "missing")
