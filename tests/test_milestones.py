"""Milestone parsing, formatting and tracking: the documented forms and beyond."""

from __future__ import annotations

import pytest

from dimba.checkpointing.milestones import (
    MilestoneError,
    MilestoneTracker,
    format_param_count,
    milestone_label,
    parse_milestone_input,
    parse_milestones,
)

B, M = 10**9, 10**6


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,5,10,30", [1 * B, 5 * B, 10 * B, 30 * B]),  # bare numbers: billions (seed default)
        ("1B,5B,10B", [1 * B, 5 * B, 10 * B]),
        ("100M,500M,1B", [100 * M, 500 * M, 1 * B]),
        ("500M,1B,3B", [500 * M, 1 * B, 3 * B]),
        (" 1.5b , 250m ", [250 * M, 1_500 * M]),
        ("30,1,5,5", [1 * B, 5 * B, 30 * B]),  # sorted and unique
    ],
)
def test_seed_table_of_input_formats(text, expected):
    assert parse_milestone_input(text) == expected


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1e9, 5e9], [1 * B, 5 * B]),
        ([1000000000, 5000000000], [1 * B, 5 * B]),
        (["100M", "1B"], [100 * M, 1 * B]),
        (["1e9", "1_000_000"], [1 * M, 1 * B]),
        (["500K", 2e6, "2M"], [500_000, 2 * M]),
        ([1.1e9], [1_100_000_000]),  # exact, no float residue
        (["1.5e9"], [1_500_000_000]),
        ("1M", [1 * M]),
    ],
)
def test_config_forms_are_raw_counts_unless_suffixed(values, expected):
    assert parse_milestones(values) == expected
    assert all(type(m) is int for m in parse_milestones(values))


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("abc", "is not a parameter count"),
        ("-5", "is negative"),
        (-5, "is negative"),
        ("0", "is zero"),
        (0, "is zero"),
        ("nan", "is not finite"),
        (float("nan"), "is not finite"),
        ("inf", "is not finite"),
        (float("inf"), "is not finite"),
        ("1.5X", "unknown unit"),
        ("", "is empty"),
        ("  ", "is empty"),
        (1.5, "not a whole number"),
        ("1.0000005M", "not a whole number"),
        (True, "is not a parameter count"),
        (None, "is not a parameter count"),
    ],
)
def test_invalid_milestones_are_rejected_with_the_value_and_accepted_forms(bad, reason):
    with pytest.raises(MilestoneError) as info:
        parse_milestones([1000, bad])
    assert reason in str(info.value)
    assert repr(bad) in str(info.value)
    assert "K/M/B" in str(info.value)


def test_an_empty_item_in_a_list_string_is_rejected():
    with pytest.raises(MilestoneError, match="is empty"):
        parse_milestone_input("1,,5")


@pytest.mark.parametrize(
    "count, text",
    [(1_000_000_000, "1.0B"), (1_200_000_000, "1.2B"), (1_234_567, "1.2M"), (2_000_000, "2.0M"),
     (5_500, "5.5K"), (999, "999"), (30 * B, "30.0B"), (2 * 10**12, "2.0T")],
)
def test_format_param_count_matches_the_seed(count, text):
    assert format_param_count(count) == text


def test_labels_are_exact_so_lookalike_milestones_get_distinct_names():
    assert milestone_label(1 * B) == "1.0B"  # the checkpoint file name form
    assert milestone_label(1_000_000) == "1.0M"
    assert milestone_label(1_040_000) == "1.04M"
    assert format_param_count(1_040_000) == format_param_count(1_000_000)  # they display alike...
    assert milestone_label(1_040_000) != milestone_label(1_000_000)  # ...but never share a name
    assert milestone_label(1_234_567) == "1.234567M"
    assert milestone_label(500) == "500"


def test_tracker_reports_every_crossed_milestone_once():
    tracker = MilestoneTracker([4 * M, 1 * M, 2 * M])
    assert tracker.next_milestone() == 1 * M
    assert tracker.crossed(900_000) == []
    assert tracker.crossed(2_500_000) == [1 * M, 2 * M]
    tracker.mark_reached([1 * M, 2 * M])
    assert tracker.crossed(2_500_000) == []
    assert tracker.next_milestone() == 4 * M
    tracker.mark_reached([4 * M])
    assert tracker.next_milestone() is None


def test_tracker_state_round_trips_and_keeps_reached_after_a_config_edit():
    tracker = MilestoneTracker([1 * M, 2 * M])
    tracker.mark_reached([1 * M])
    resumed = MilestoneTracker([1 * M, 2 * M, 3 * M])
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.reached == [1 * M]
    assert resumed.crossed(10 * M) == [2 * M, 3 * M]
