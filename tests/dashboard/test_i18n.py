"""Every label exists in both languages, and a Chinese screen never shows an English label by mistake."""

import pytest

from agent.core.states import BoardState
from dashboard import i18n


def test_both_languages_have_every_label():
    assert set(i18n.LABELS["zh-CN"]) == set(i18n.LABELS["en"])
    assert all(i18n.LABELS[lang][k].strip() for lang in i18n.LANGUAGES for k in i18n.LABELS[lang])


def test_only_symbols_read_the_same_in_both():
    same = {k for k in i18n.LABELS["en"] if i18n.LABELS["en"][k] == i18n.LABELS["zh-CN"][k]}
    assert same <= i18n.SAME_IN_BOTH, sorted(same - i18n.SAME_IN_BOTH)


@pytest.mark.parametrize("state", list(BoardState))
def test_every_board_state_has_a_name(state):
    # a state added to BoardState without its labels fails here (the pages show t("state.<STATE>"))
    assert f"state.{state}" in i18n.LABELS["zh-CN"] and f"state.{state}" in i18n.LABELS["en"]
    assert i18n.t("zh-CN", f"state.{state}") != i18n.t("en", f"state.{state}")


@pytest.mark.parametrize("asked,expected", [("en", "en"), ("zh-CN", "zh-CN"), ("zh-cn", "zh-CN"), (None, "zh-CN"),
                                            ("fr", "zh-CN"), ("", "zh-CN")])
def test_a_screen_language_falls_back_to_the_site_default(asked, expected):
    assert i18n.normalize(asked, "zh-CN") == expected


def test_an_unknown_key_shows_itself_rather_than_nothing():
    assert i18n.t("zh-CN", "no.such.label") == "no.such.label"
