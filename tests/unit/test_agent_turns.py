"""The agent's bookkeeping between model calls, as pure functions."""

from __future__ import annotations

from dataclasses import replace

from jarvis_trio.agent_turns import (
    assistant_turn,
    offered_tools,
    split_calls,
    step_request,
    tool_turn,
)
from jarvis_trio.backends.openai_wire import chat_body
from jarvis_trio.generation import ChatTurn, GenerationRequest, ToolCall
from jarvis_trio.tools.host import offered_names


def call(name: str, call_id: str | None = "c1") -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def test_only_the_clients_own_tools_go_to_the_client() -> None:
    calls = split_calls({"tool_calls": [call("add"), call("ghost"), call("mine")]}, ["mine"])
    assert [c.name for c in calls.client] == ["mine"]
    # A made-up name is the gateway's to answer (unknown_tool), not the client's.
    assert [c.name for c in calls.server] == ["add", "ghost"]


def test_a_call_without_an_id_gets_one() -> None:
    calls = split_calls({"tool_calls": [call("add", None)]}, [])
    assert calls.server[0].id.startswith("call_")


def test_the_clients_tools_shadow_the_servers() -> None:
    def tool(name: str, who: str) -> dict[str, object]:
        return {"type": "function", "function": {"name": name, "description": who}}

    offered = offered_tools([tool("add", "client")], [tool("add", "server"), tool("now", "s")])
    assert [(t["function"]["name"], t["function"]["description"]) for t in offered] == [
        ("add", "client"),
        ("now", "s"),
    ]


def test_tool_choice_applies_to_the_first_model_call_only() -> None:
    request = GenerationRequest(
        model="m",
        messages=(ChatTurn("user", "hi"),),
        options={"tool_choice": "required", "tools": []},
    )
    first = step_request(request, tools=[{"type": "function"}])
    later = step_request(request, tools=[{"type": "function"}], turns=[ChatTurn("tool", "5")])
    assert first.options["tool_choice"] == "required"
    assert "tool_choice" not in later.options


def test_offered_names_are_valid_openai_function_names() -> None:
    names = offered_names(
        [
            ("fs", "read.file"),
            ("fs", "a/b"),
            ("web", "a_b"),
            ("x", "n" * 80),
            ("one", "same"),
            ("two", "same"),
        ]
    )
    assert names == ["read_file", "a_b", "a_b_2", "n" * 64, "one__same", "two__same"]


def test_the_agents_turns_reach_an_openai_upstream_whole_with_or_without_raw_messages() -> None:
    """Found in review: a request built in code (no raw messages) sent only the agent's
    turns upstream, without the conversation before them."""
    call = ToolCall("call_1", "add", '{"a": 1}')
    turns = [assistant_turn("", [call]), tool_turn(call, "2")]
    expected_turns = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ],
        },
        {"role": "tool", "content": "2", "tool_call_id": "call_1"},
    ]
    in_code = GenerationRequest(model="m", messages=(ChatTurn("user", "1+1?"),))
    sent = chat_body(step_request(in_code, tools=[], turns=turns))["messages"]
    assert sent == [{"role": "user", "content": "1+1?"}, *expected_turns]
    as_sent = replace(in_code, raw_messages=({"role": "user", "content": "1+1?", "x": 1},))
    sent = chat_body(step_request(as_sent, tools=[], turns=turns))["messages"]
    assert sent == [{"role": "user", "content": "1+1?", "x": 1}, *expected_turns]
