import random
from dataclasses import replace

import pytest

from serve_app.core.reconcile import plan
from serve_app.core.routing import ModelRoute, RoutingTable

FEATURES = ("a", "b")


def canary(weight: float, **kw) -> ModelRoute:
    return ModelRoute("fraud-card-eu", 1, FEATURES, challenger=2, challenger_weight=weight, **kw)


def test_champion_only_route_always_answers_with_champion():
    route = ModelRoute("m", 3, FEATURES)
    assert {route.choose(str(k)) for k in range(100)} == {3}
    assert route.choose(None) == 3


@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0, 50.0, 90.0])
def test_sticky_split_matches_weight_over_10k_keys(weight):
    route = canary(weight)
    share = sum(route.choose(f"acct-{k}") == 2 for k in range(10_000)) / 100.0
    assert abs(share - weight) <= 1.5


def test_same_key_same_version():
    route = canary(30.0)
    for key in ("acct-1", "acct-2", "x"):
        assert len({route.choose(key) for _ in range(50)}) == 1


def test_raising_weight_only_moves_keys_towards_challenger():
    keys = [f"k{i}" for i in range(5_000)]
    before = {k for k in keys if canary(10.0).choose(k) == 2}
    after = {k for k in keys if canary(40.0).choose(k) == 2}
    assert before < after


def test_keys_hash_independently_per_model():
    a = ModelRoute("a", 1, FEATURES, challenger=2, challenger_weight=50.0)
    b = ModelRoute("b", 1, FEATURES, challenger=2, challenger_weight=50.0)
    keys = [str(i) for i in range(2_000)]
    assert [a.choose(k) for k in keys] != [b.choose(k) for k in keys]


def test_random_split_without_key_follows_weight():
    rng = random.Random(4)
    share = sum(canary(20.0).choose(None, rng) == 2 for _ in range(20_000)) / 200.0
    assert abs(share - 20.0) < 1.5


def test_shadow_challenger_never_answers():
    route = canary(100.0, shadow=True)
    assert {route.choose(str(k)) for k in range(200)} == {1}
    assert route.versions == (1, 2)


def test_weight_bounds():
    with pytest.raises(ValueError, match=r"not in 0\.\.100"):
        canary(101.0)
    assert {canary(100.0).choose(str(k)) for k in range(100)} == {2}
    assert {canary(0.0).choose(str(k)) for k in range(100)} == {1}


def table_of(*routes: ModelRoute) -> RoutingTable:
    return RoutingTable().with_routes({r.name: r for r in routes}, ())


def test_table_updates_are_copies_with_new_revisions():
    one = table_of(ModelRoute("m", 1, FEATURES))
    two = one.with_routes({"m": ModelRoute("m", 2, FEATURES)}, ())
    assert (one.revision, two.revision) == (1, 2)
    assert one.get("m").champion == 1 and two.get("m").champion == 2
    assert one.changed_models(two) == {"m"}
    assert two.with_routes(dict(two.routes), ()) is two, "no change, no new revision"
    assert two.with_routes(dict(two.routes), ("m",)).hot == ("m",)
    assert RoutingTable().with_routes({}, ()).revision == 1, "an empty first table is still news"


def test_standby_and_challenger_are_kept_open_but_standby_never_answers():
    route = ModelRoute("m", 2, FEATURES, challenger=3, challenger_weight=0.0, standby=1)
    assert route.versions == (2, 3, 1) and route.answering == (2, 3)
    assert route.versions == (2, 3, 1)
    assert {route.choose(str(k)) for k in range(500)} == {2}


def test_plan_loads_new_champions_and_skips_broken_and_current():
    table = table_of(ModelRoute("a", 1, FEATURES))
    todo = plan(table, {"a": 1, "b": 4, "c": 2}, {"a", "b", "c"}, broken={("c", 2)})
    assert todo.to_load == {"b": 4}
    assert todo.to_drop == set()


def test_plan_drops_deleted_models_but_keeps_models_without_alias():
    table = table_of(ModelRoute("a", 1, FEATURES), ModelRoute("gone", 1, FEATURES))
    todo = plan(table, {}, registered={"a"}, broken=set())
    assert todo.to_drop == {"gone"} and todo.to_load == {}
    assert plan(table, {"a": 1}, {"a", "gone"}, set()).empty


def test_roles_name_each_answering_version():
    route = ModelRoute("m", 3, ("a",), challenger=4, challenger_weight=10.0, standby=2)
    assert route.roles() == {3: "champion", 4: "challenger"}
    assert replace(route, shadow=True).roles() == {3: "champion", 4: "shadow"}
    assert ModelRoute("m", 3, ("a",)).roles() == {3: "champion"}
