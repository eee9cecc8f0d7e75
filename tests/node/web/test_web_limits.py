"""The web port's limits without sockets: the admission rules, the [web] config, the JSON depth scan."""

from __future__ import annotations

import json

import pytest
from tidings.node.clock import FixedClock
from tidings.node.web import WebService
from tidings.node.web.app import json_depth
from tidings.node.web.gate import ConnectionGate, StreamSlots
from tidings.node.web.limits import WebConfigError, WebLimits, client_key
from tidings.node.web.pacing import Pipelining, RequestBudget
from tidings.node.web.routes import ApiError

from tests.support.nodes import make_home


def test_the_gate_caps_each_client_and_evicts_the_heaviest_for_a_lighter_newcomer():
    gate = ConnectionGate(max_connections=6, max_per_client=4)
    a = [gate.admit("a")[0] for _ in range(4)]
    assert all(a) and gate.admit("a") == (None, None)  # a's fifth: over the per-client cap
    b1, evicted = gate.admit("b")
    b2, _ = gate.admit("b")
    assert b1 and b2 and evicted is None and len(gate) == 6
    # full: c holds none, a holds the most (4): a's oldest makes room
    c1, evicted = gate.admit("c")
    assert c1 is not None and evicted is a[0] and len(gate) == 6
    # a holds 3, b 2, c 1: c may take one more of a's (3 > 1 + 1), b may not (3 <= 2 + 1)
    assert gate.admit("b") == (None, None)
    c2, evicted = gate.admit("c")
    assert c2 is not None and evicted is a[1]
    # now a, b and c hold 2 each: nobody is heavier than a newcomer's share plus one... except for d
    d1, evicted = gate.admit("d")
    assert d1 is not None and evicted is a[2]
    assert gate.admit("d") == (None, None) and gate.admit("a") == (None, None)
    gate.release(b1)
    gate.release(b1)  # twice is harmless
    assert len(gate) == 5 and gate.admit("a")[0] is not None
    assert gate.statistics() == {
        "open": 6,
        "clients": 4,
        "admitted": 10,
        "refused": 4,
        "evicted": 3,
        "released": 4,  # the three evicted and b1, once
    }


def test_event_stream_slots_refuse_per_client_then_in_all_and_come_back():
    slots = StreamSlots(max_streams=3, max_per_client=2)
    slots.take("a")
    slots.take("a")
    with pytest.raises(ApiError) as per_client:
        slots.take("a")
    assert (per_client.value.status, per_client.value.code) == (429, "too_many_streams")
    slots.take("b")
    with pytest.raises(ApiError) as in_all:
        slots.take("c")
    assert (in_all.value.status, in_all.value.code) == (503, "streams_full")
    slots.give_back("a")
    slots.take("c")
    assert len(slots) == 3


def test_web_config_is_checked_with_file_key_and_range(tmp_path):
    assert WebLimits.from_config(None) == WebLimits()
    limits = WebLimits.from_config({"max_connections": 10, "idle_timeout": 2}, source="c.toml")
    assert limits.max_connections == 10 and limits.idle_timeout == 2.0
    for table, words in [
        ({"max_connections": 0}, "[web] max_connections must be an integer from 1 to 100000, not 0"),
        ({"max_connections": "ten"}, "max_connections must be an integer"),
        ({"max_connections": True}, "max_connections must be an integer"),
        ({"max_per_client": 2.5}, "max_per_client must be an integer from 1 to 100000, not 2.5"),
        ({"write_timeout": 0}, "write_timeout must be a number from 0.1 to 3600, not 0"),
        ({"max_conections": 5}, "[web] has no setting 'max_conections'"),
    ]:
        with pytest.raises(WebConfigError) as err:
            WebLimits.from_config(table, source="c.toml")
        assert err.value.code == "bad_config" and err.value.message.startswith("c.toml: ")
        assert words in err.value.message, err.value.message
    home, _ = make_home(tmp_path, "a")
    home.config_path.write_text("[web]\nmax_body = 10\n")
    with pytest.raises(WebConfigError) as err:
        WebService(home, "127.0.0.1:0")  # before the node starts
    assert str(home.config_path) in err.value.message and "max_body" in err.value.message


def test_the_web_port_gets_a_quarter_of_the_descriptor_limit():
    limits = WebLimits()
    assert limits.budgeted(1 << 20) == limits
    small = limits.budgeted(256)
    assert (small.max_connections, small.max_per_client, small.max_event_streams) == (64, 32, 32)
    tiny = limits.budgeted(20)
    assert (
        tiny.max_connections,
        tiny.max_per_client,
        tiny.max_event_streams,
        tiny.max_event_streams_per_client,
    ) == (5, 5, 5, 5)


def test_clients_are_ipv4_addresses_or_ipv6_slash_64s():
    assert client_key("127.0.0.7") == "127.0.0.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("somewhere") == "somewhere"


@pytest.mark.parametrize(
    "value",
    [
        [],
        {"a": [1, {"b": [2]}]},
        ["[[[", "\\", '"]]]', "\\\\"],
        {"k": ['\\"[', [[["x"]]]]},
        [[[[[]]]]],
        "plain",
    ],
)
def test_json_depth_counts_brackets_outside_strings(value):
    text = json.dumps(value).encode()

    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    assert json_depth(text, 32) == depth(value)


def test_json_depth_stops_early_on_very_deep_input():
    assert json_depth(b"[" * 1_000_000, 32) == 33
    assert json_depth(b'"' + b"[" * 1000 + b'"', 32) == 0


def test_the_request_budget_is_a_token_bucket_per_client_on_the_clock():
    clock = FixedClock()
    budget = RequestBudget(rate=2.0, burst=3, now=clock.monotonic)
    assert [budget.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take("a") == 0.5  # the next token is due in half a second, and reserved
    assert budget.take("a") == 1.0
    assert budget.take("b") == 0.0  # another client has its own bucket
    clock.now += 10.0
    assert budget.take("a") == 0.0
    assert (budget.answered, budget.paced) == (7, 2)


def test_pipelined_answers_in_a_row_are_capped_and_any_read_ends_the_run():
    pipelining = Pipelining(max_pipelined=2)
    assert pipelining.start(1)  # the first request
    assert pipelining.start(2)  # sent after the first answer: a new read
    assert pipelining.start(2) and pipelining.start(2)  # two pipelined
    assert not pipelining.start(2)  # the third in a row without a read
    assert pipelining.start(3)
    strict = Pipelining(max_pipelined=0)
    assert strict.start(1) and not strict.start(1)
