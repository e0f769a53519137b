"""The benchmark's duration estimate: pure arithmetic over the sizes."""

from __future__ import annotations

from bench import cli


def _sizes(**kw: object) -> dict[str, object]:
    args = cli.parse_args(["--scenarios", "lease-hold", "--sims", "s1"]
                          + [a for k, v in kw.items() for a in ("--sizes", f"{k}={v}")])
    return cli.resolve(args)[2]


def test_lease_hold_estimate_covers_a_start_past_16k() -> None:
    small = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=18000, hold_max=18000), 1)["lease-hold"]
    big = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=18000, hold_max=36000), 1)["lease-hold"]
    assert small > 18000 / 250   # at least the one step's creations
    assert big == small          # steps past 16k are not guessed at: the first one always is


def test_lease_hold_estimate_grows_with_each_doubling() -> None:
    one = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=4000, hold_max=4000), 1)["lease-hold"]
    three = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=4000, hold_max=16000), 1)["lease-hold"]
    assert three > one


def test_a_smaller_growth_factor_means_more_steps_and_one_at_most_1_is_refused() -> None:
    two = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=2000, hold_max=16000), 1)["lease-hold"]
    finer = cli.estimate(["lease-hold"], ["s1"], _sizes(hold_start=2000, hold_max=16000, hold_grow=1.5), 1)
    assert finer["lease-hold"] > two
    try:
        _sizes(hold_grow=1)
    except SystemExit as e:
        assert "hold_grow=1" in str(e)
    else:
        raise AssertionError("hold_grow=1 accepted")


def test_the_in_state_writer_adds_its_levels_to_each_held_size_and_bad_levels_are_refused() -> None:
    plain = _sizes(hold_start=4000, hold_max=8000)
    with_writer = _sizes(hold_start=4000, hold_max=8000, hold_writer="64,2x64")
    assert plain["hold_writer"] == [] and with_writer["hold_writer"] == ["64", "2x64"]
    a = cli.estimate(["lease-hold"], ["s1"], plain, 1)["lease-hold"]
    b = cli.estimate(["lease-hold"], ["s1"], with_writer, 1)["lease-hold"]
    # two sizes (4k, 8k), each followed by two 30 s levels and a fresh cluster
    assert b - a >= 2 * 2 * 30
    for bad in ("0", "x64", "2x", "64y", "-1"):
        try:
            _sizes(hold_writer=bad)
        except SystemExit as e:
            assert f"hold_writer={bad}" in str(e)
        else:
            raise AssertionError(f"hold_writer={bad} accepted")


def test_the_profile_at_hold_is_on_by_default_counted_in_the_estimate_and_can_run_alone() -> None:
    default = _sizes()
    assert default["profile_hold_nodes"] == 20000 and default["profile_hold_s"] == 60
    with_hold = cli.estimate(["profile"], ["s1"], default, 1)["profile"]
    without = cli.estimate(["profile"], ["s1"], _sizes(profile_hold_nodes=0), 1)["profile"]
    alone = cli.estimate(["profile"], ["s1"], _sizes(profile_nodes=0), 1)["profile"]
    # 20,000 nodes made Ready, the settle and the 60 s window
    assert with_hold - without >= 20000 / 110 + 30 + 60
    assert 0 < alone < with_hold and alone == with_hold - without


def test_hold_sims_limits_the_lease_hold_search_and_must_be_some_of_sims() -> None:
    sims = ["kwok", "s1", "s2", "s4"]
    args = cli.parse_args(["--sims", ",".join(sims)])
    assert cli.hold_sims(args, sims) == sims
    args = cli.parse_args(["--sims", ",".join(sims), "--hold-sims", "s1, kwok"])
    assert cli.hold_sims(args, sims) == ["kwok", "s1"]   # in --sims order
    sizes = cli.resolve(args)[2]
    every = cli.estimate(["lease-hold", "steady"], sims, sizes, 1)
    two = cli.estimate(["lease-hold", "steady"], sims, sizes, 1, ["kwok", "s1"])
    assert every["steady"] == two["steady"]          # the other scenarios still run every simulator
    assert 0 < two["lease-hold"] < every["lease-hold"]
    for bad in ("s8", "", "kwok,s3"):
        try:
            cli.hold_sims(cli.parse_args(["--sims", "kwok,s1", "--hold-sims", bad]), ["kwok", "s1"])
        except SystemExit as e:
            assert "--hold-sims" in str(e)
        else:
            raise AssertionError(f"--hold-sims {bad!r} accepted")


def test_the_profile_runs_the_first_shardlet_named_with_kwok_beside_it() -> None:
    assert cli.profile_sims(["kwok", "s1", "s2", "s4"]) == ["kwok", "s1"]   # the full run: in-process shard
    assert cli.profile_sims(["s4"]) == ["s4"]
    assert cli.profile_sims(["s4", "kwok"]) == ["kwok", "s4"]
    assert cli.profile_sims(["kwok"]) == ["kwok", "s1"]                      # no shardlet named: S=1
    # Ray's start is in the estimate when the profiled shardlet runs under it
    s1 = cli.estimate(["profile"], ["s1"], _sizes(), 1)["profile"]
    s4 = cli.estimate(["profile"], ["s4"], _sizes(), 1)["profile"]
    assert s4 > s1


def test_comma_lists_drop_blanks_and_spaces() -> None:
    args = cli.parse_args(["--scenarios", " ready, ,steady ", "--sims", "kwok, s4,"])
    scenarios, sims, _ = cli.resolve(args)
    assert scenarios == ["ready", "steady"] and sims == ["kwok", "s4"]
