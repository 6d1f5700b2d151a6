"""The pins file's pure core: parsing, merging pins with aliases, disagreements."""

from __future__ import annotations

import pytest

from serve_app.core.pins import (
    PinCheck,
    PinsError,
    check_pins,
    desired_champions,
    parse_pins,
    pin_changes,
)


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "# nothing pinned\n", "pins:\n", "pins: {}\n"])
def test_an_empty_file_pins_nothing(text):
    assert parse_pins(text) == {}


def test_pins_parse_sorted_by_model():
    text = "# reviewed: CHG-1\npins:\n  fraud-card-us: 7\n  fraud-card-eu: 3\n"
    assert list(parse_pins(text).items()) == [("fraud-card-eu", 3), ("fraud-card-us", 7)]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("pins: [fraud-card-eu]\n", "must map model names"),
        ("- fraud-card-eu: 3\n", "one key 'pins'"),
        ("pins: {fraud-card-eu: 3}\nextra: 1\n", "one key 'pins'"),
        ("pinz: {fraud-card-eu: 3}\n", "one key 'pins'"),
        ("pins: {fraud-card-eu: v3}\n", "pin of 'fraud-card-eu'"),
        ("pins: {fraud-card-eu: '3'}\n", "positive integer"),
        ("pins: {fraud-card-eu: 0}\n", "positive integer"),
        ("pins: {fraud-card-eu: -2}\n", "positive integer"),
        ("pins: {fraud-card-eu: 3.5}\n", "positive integer"),
        ("pins: {fraud-card-eu: true}\n", "positive integer"),
        ("pins: {fraud-card-eu: null}\n", "positive integer"),
        ("pins: {fraud-card-eu: {version: 3}}\n", "positive integer"),
        ("pins: {12: 3}\n", "non-empty string"),
        ("pins: {'': 3}\n", "non-empty string"),
        ("pins:\n  fraud-card-eu: 3\n  fraud-card-eu: 4\n", "given twice (line 3)"),
        ("pins: {fraud-card-eu: 3\n", "not valid YAML at line"),
        ("pins:\n\tfraud-card-eu: 3\n", "not valid YAML"),
        ("pins: !!python/object:os.system {}\n", "not valid YAML"),
        ("pins:\n  ? [a, b]\n  : 3\n", "plain value"),
    ],
)
def test_a_malformed_file_says_what_is_wrong(text, why):
    with pytest.raises(PinsError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_pins(text)


def test_a_version_is_never_echoed_past_its_type():
    with pytest.raises(PinsError) as error:
        parse_pins("pins: {fraud-card-eu: 'secret-looking value'}\n")
    assert "secret-looking" not in str(error.value)


# -- merging with aliases --------------------------------------------------------------------
CHAMPIONS = {"a": 2, "b": 5, "c": 1}
REGISTERED = {"a", "b", "c", "d"}


def test_without_pins_the_aliases_decide():
    assert desired_champions(CHAMPIONS, {}, REGISTERED, {}, set()) == CHAMPIONS


def test_a_pin_outranks_the_champion_alias_and_leaves_other_models_alone():
    desired = desired_champions(CHAMPIONS, {"a": 1}, REGISTERED, {"a": 2}, set())
    assert desired == {"a": 1, "b": 5, "c": 1}


def test_a_pin_serves_a_model_without_a_champion_alias():
    assert desired_champions(CHAMPIONS, {"d": 4}, REGISTERED, {}, set())["d"] == 4


def test_a_pin_of_a_model_the_registry_lacks_is_left_out():
    assert desired_champions(CHAMPIONS, {"zz": 4}, REGISTERED, {}, set()) == CHAMPIONS


def test_an_unservable_pin_keeps_the_version_serving_now():
    desired = desired_champions(CHAMPIONS, {"a": 9}, REGISTERED, {"a": 1}, {("a", 9)})
    assert desired["a"] == 1, "the last good version, not the alias's v2 nor the broken v9"


def test_an_unservable_pin_of_a_model_serving_nothing_yet_serves_the_alias_meanwhile():
    desired = desired_champions(CHAMPIONS, {"a": 9}, REGISTERED, {}, {("a", 9)})
    assert desired["a"] == 2
    nothing = desired_champions(CHAMPIONS, {"d": 9}, REGISTERED, {}, {("d", 9)})
    assert "d" not in nothing, "no alias, no last good version: nothing to serve"


def test_another_unservable_version_does_not_stop_the_pin():
    desired = desired_champions(CHAMPIONS, {"a": 3}, REGISTERED, {"a": 2}, {("a", 9), ("b", 3)})
    assert desired["a"] == 3


def test_inputs_are_not_mutated():
    champions = dict(CHAMPIONS)
    desired_champions(champions, {"a": 1}, REGISTERED, {}, set())
    assert champions == CHAMPIONS


# -- disagreement ----------------------------------------------------------------------------
ALIASES = {
    "agree": {"champion": 3},
    "moved": {"champion": 4, "challenger": 5},
    "bare": {},
    "same": {"champion": 2, "challenger": 2},
}


def test_check_pins_tells_agreement_and_disagreement():
    checks = check_pins({"agree": 3, "moved": 3, "bare": 1, "gone": 2, "same": 2}, ALIASES)
    assert list(checks) == ["agree", "bare", "gone", "moved", "same"]
    assert checks["agree"].agrees and checks["agree"].disagreement is None
    assert not checks["moved"].agrees
    assert checks["moved"].disagreement == "pinned to v3; @champion is v4"
    assert checks["bare"].disagreement == "pinned to v1; the model has no @champion"
    assert not checks["gone"].agrees and not checks["gone"].registered
    assert "no model 'gone'" in checks["gone"].disagreement
    assert checks["same"].agrees


def test_a_challenger_of_a_pinned_model_is_reported_as_ignored():
    checks = check_pins({"moved": 3, "agree": 3, "same": 2}, ALIASES)
    assert checks["moved"].ignored_challenger == 5
    assert checks["agree"].ignored_challenger is None
    assert checks["same"].ignored_challenger is None, "the challenger is the pinned version"
    assert PinCheck("m", 3, 3, 3).ignored_challenger is None


def test_pin_changes_names_set_moved_and_removed_pins():
    before = {"a": 1, "b": 2, "c": 3}
    after = {"a": 1, "b": 4, "d": 5}
    assert pin_changes(before, after) == {"b": 4, "c": None, "d": 5}
    assert pin_changes(after, after) == {}
