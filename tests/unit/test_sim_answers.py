"""What the simulated models answer when tools or JSON are asked for."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import given
from hypothesis import strategies as st

from jarvis_trio.sim_answers import Call, Plan, Turn, example_for, plan

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock"}}


def test_a_named_tool_is_called_with_the_json_after_its_name() -> None:
    answer = plan([Turn("user", 'please use add {"a": 2, "b": 3} now')], tools=[ADD])
    assert answer == Plan(calls=(Call("add", {"a": 2, "b": 3}),))


def test_without_json_the_arguments_come_from_the_schema() -> None:
    answer = plan([Turn("user", "add something")], tools=[ADD])
    assert answer.calls == (Call("add", {"a": 1, "b": 1}),)


def test_tools_are_called_in_the_order_named_and_only_the_first_without_parallel() -> None:
    turns = [Turn("user", "what does the clock say, then add")]
    assert [c.name for c in plan(turns, tools=[ADD, CLOCK]).calls] == ["clock", "add"]
    assert [c.name for c in plan(turns, tools=[ADD, CLOCK], parallel=False).calls] == ["clock"]


def test_a_name_inside_another_word_is_no_call() -> None:
    assert plan([Turn("user", "an addition or address")], tools=[ADD]) == Plan()


def test_tool_results_are_answered_with_text_that_uses_them() -> None:
    turns = [
        Turn("user", "use add"),
        Turn("assistant", ""),
        Turn("tool", "5", tool_name="add"),
        Turn("tool", "12:00", tool_name="clock"),
    ]
    answer = plan(turns, tools=[ADD])
    assert answer.text == "Done: add returned 5; clock returned 12:00."


def test_json_mode_and_schemas() -> None:
    assert plan([Turn("user", "a b c")], json_mode=True).text == '{"answer": "a b c"}'
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert plan([Turn("user", "x")], json_schema=schema).text == '{"ok": true}'


SCHEMA_LEAVES = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer", "minimum": 3},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["red", "green"]},
        {"const": 7},
        {"type": ["string", "null"]},
    ]
)
SCHEMAS = st.recursive(
    SCHEMA_LEAVES,
    lambda inner: st.one_of(
        st.builds(
            lambda props: {
                "type": "object",
                "properties": props,
                "required": list(props),
                "additionalProperties": False,
            },
            st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), inner, max_size=4),
        ),
        st.builds(lambda items: {"type": "array", "items": items, "minItems": 1}, inner),
        st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
    ),
    max_leaves=12,
)


@given(SCHEMAS)
def test_an_example_matches_its_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_for(schema), schema)
