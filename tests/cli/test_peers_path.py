"""``tidings peers``: how each connected peer is reached, read from the running node's ``node.json``
(spec/cli.md, *Network*; spec/protocol.md §12.10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner
from tidings.cli.commands_network import peers
from tidings.node.home import Home
from tidings.protocol import SigningKey, feed_id_text
from tidings.storage.peers import note_peer


def test_peers_show_the_path_of_connected_peers(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.init()
    direct, relayed, gone, relay = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3, 4))
    with home.open_store() as store:
        note_peer(store, direct.public_key, "127.0.0.9:7433", "peer", True, 1_000)
        note_peer(store, relayed.public_key, None, "relayed", True, 2_000)
        note_peer(store, gone.public_key, "127.0.0.8:7433", "peer", False, 500)
    node = {
        "pid": os.getpid(),  # alive: the node counts as running
        "listen": "127.0.0.2:7433",
        "feed": feed_id_text(direct.public_key),
        "peers": [
            {
                "feed": feed_id_text(direct.public_key),
                "address": "127.0.0.9:7433",
                "path": "direct",
                "relay": None,
            },
            {
                "feed": feed_id_text(relayed.public_key),
                "address": "127.0.0.5:7433",
                "path": "relayed",
                "relay": feed_id_text(relay.public_key),
            },
        ],
    }
    home.node_file.write_text(json.dumps(node))
    run = CliRunner().invoke(peers, ["--home", str(home.path), "--json"])
    assert run.exit_code == 0, run.output
    rows = {row["feed"]: row for row in map(json.loads, run.stdout.splitlines())}
    assert rows[feed_id_text(direct.public_key)]["path"] == "direct"
    assert "relay" not in rows[feed_id_text(direct.public_key)]
    row = rows[feed_id_text(relayed.public_key)]
    assert (row["path"], row["relay"]) == ("relayed", feed_id_text(relay.public_key))
    assert "path" not in rows[feed_id_text(gone.public_key)]  # not connected: no path
    text = CliRunner().invoke(peers, ["--home", str(home.path)])
    assert text.exit_code == 0 and f"relayed via {feed_id_text(relay.public_key)}" in text.output
    home.node_file.unlink()  # not running: nobody is connected, and no path either
    rows = [
        json.loads(line)
        for line in CliRunner().invoke(peers, ["--home", str(home.path), "--json"]).stdout.splitlines()
    ]
    assert all(not r["connected"] and "path" not in r for r in rows)
