from __future__ import annotations

from triggerfish.models import EventTriggerSpec
from triggerfish.triggers.matcher import TriggerIndex


def spec(**fields: object) -> EventTriggerSpec:
    base: dict[str, object] = {
        "name": "t",
        "function": "f",
        "resource": "Item",
        "actions": ("Created",),
    }
    return EventTriggerSpec.model_validate({**base, **fields})


def test_index_by_resource_and_action_with_filters() -> None:
    index = TriggerIndex()
    index.add("t1", spec(filter={"dir": "/in"}))
    index.add("t2", spec(actions=("Created", "Updated"), execution_mode="Always"))
    index.add("t3", spec(resource="Dataset"))
    fired, suppressed = index.match("Item", "Created", {"dir": "/in"}, "item-1")
    assert sorted((f.trigger_id, f.once_key) for f in fired) == [("t1", "item-1"), ("t2", None)]
    assert suppressed == []
    fired, _ = index.match("Item", "Created", {"dir": "/out"}, "item-2")
    assert [f.trigger_id for f in fired] == ["t2"]
    fired, _ = index.match("Item", "Deleted", {"dir": "/in"}, "item-1")
    assert fired == []
    index.remove("t2")
    assert not index.listens_to("Item", "Updated") and index.listens_to("Item", "Created")
    assert len(index) == 2


def test_filters_filed_by_their_string_still_fire_on_arrays_and_go_away() -> None:
    index = TriggerIndex()
    index.add("dir", spec(filter={"dir": "/in", "size": {"$gt": 1}}))
    index.add("label", spec(filter={"$and": [{"labels": "cat"}, {"hidden": False}]}))
    index.add("wild", spec(filter={"dir": "/i*"}))
    index.add("box", spec(filter={"boxes.label": {"$eq": "dog"}}))
    body = {"dir": "/in", "size": 2, "labels": ["dog", "cat"], "hidden": False, "boxes": []}
    fired, _ = index.match("Item", "Created", body, "i")
    assert sorted(f.trigger_id for f in fired) == ["dir", "label", "wild"]
    fired, _ = index.match("Item", "Created", {"boxes": [{"label": "dog"}]}, "i")
    assert [f.trigger_id for f in fired] == ["box"]
    fired, _ = index.match("Item", "Created", {**body, "size": 0, "hidden": True}, "i")
    assert [f.trigger_id for f in fired] == ["wild"]
    for trigger_id in ("dir", "label", "box"):
        index.remove(trigger_id)
    fired, _ = index.match("Item", "Created", body, "i")
    assert [f.trigger_id for f in fired] == ["wild"]
    index.remove("wild")
    assert not index.listens_to("Item", "Created") and len(index) == 0


def test_once_without_a_resource_id_keys_on_the_event() -> None:
    index = TriggerIndex()
    index.add("t1", spec())
    fired, _ = index.match("Item", "Created", {}, None, event_id="evt-9")
    assert fired[0].once_key == "event:evt-9"


def test_loop_limit_and_depth_cap_suppress_with_reasons() -> None:
    index = TriggerIndex(max_depth=3)
    index.add("own", spec(execution_mode="Once"))
    index.add("lenient", spec(name="l", loop_limit=1))
    fired, suppressed = index.match("Item", "Created", {}, "i", lineage=("own",))
    assert [f.trigger_id for f in fired] == ["lenient"]
    assert [
        (s.trigger_id, "own executions (1 deep; loop_limit is 0)" in s.reason) for s in suppressed
    ] == [("own", True)]
    fired, suppressed = index.match("Item", "Created", {}, "i", lineage=("lenient", "lenient"))
    assert [f.trigger_id for f in fired] == ["own"]
    assert [s.trigger_id for s in suppressed] == ["lenient"]
    _, suppressed = index.match("Item", "Created", {}, "i", lineage=("a", "b", "c"))
    assert sorted(s.trigger_id for s in suppressed) == ["lenient", "own"]
    assert "3 triggers deep (the cap is 3)" in suppressed[0].reason
