"""SQLite schema and versioned migrations (``PRAGMA user_version``).

Each migration runs in one transaction; a store opened by an older version is migrated forward on
open, and a store newer than this code is refused rather than damaged.
"""

from __future__ import annotations

import sqlite3

from .errors import CorruptStore

__all__ = ["FUTURE_SKEW_MS", "SCHEMA_VERSION", "migrate", "rank_ts"]

#: How far ahead of the moment an entry reached this store its own timestamp may still count, in ms
#: (spec/ranking.md §1.1): clocks a few minutes fast rank as they say, later dates as received.
#: Migration 7 writes it into the ``entries_rank`` index; changing it needs a new migration that
#: recreates that index (a query whose expression differs from the index's cannot use it).
FUTURE_SKEW_MS = 300_000


def rank_ts(table: str = "") -> str:
    """The SQL expression of an entry's ranked time, ``min(ts, received + FUTURE_SKEW_MS)``
    (spec/ranking.md §1.1), on the columns of ``table`` (an alias, or none). Written exactly as the
    ``entries_rank`` index is, so a query ordering or filtering by it walks that index."""
    p = f"{table}." if table else ""
    return f"min({p}ts, {p}received + {FUTURE_SKEW_MS})"


_MIGRATIONS: list[str] = [
    # 1: logs, payloads, forks and the projections the reading commands use.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
    CREATE TABLE feeds (
        author BLOB PRIMARY KEY,
        head_seq INTEGER NOT NULL DEFAULT 0,
        head_hash BLOB,
        head_ts INTEGER NOT NULL DEFAULT 0,
        count INTEGER NOT NULL DEFAULT 0,
        forked INTEGER NOT NULL DEFAULT 0,
        kind TEXT NOT NULL DEFAULT 'remote'
    ) WITHOUT ROWID;
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        type TEXT,
        raw BLOB NOT NULL,
        payload BLOB,
        deleted INTEGER NOT NULL DEFAULT 0,
        received INTEGER NOT NULL,
        UNIQUE (author, seq)
    );
    CREATE INDEX entries_ts ON entries (ts);
    CREATE TABLE forks (
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        proof BLOB NOT NULL,
        found INTEGER NOT NULL,
        PRIMARY KEY (author, seq)
    ) WITHOUT ROWID;
    CREATE TABLE posts (
        entry INTEGER PRIMARY KEY REFERENCES entries (id),
        author BLOB NOT NULL,
        ts INTEGER NOT NULL,
        text TEXT NOT NULL,
        reply BLOB,
        root BLOB,
        lang TEXT
    );
    CREATE INDEX posts_root ON posts (root) WHERE root IS NOT NULL;
    CREATE INDEX posts_reply ON posts (reply) WHERE reply IS NOT NULL;
    CREATE TABLE reactions (
        entry INTEGER PRIMARY KEY REFERENCES entries (id),
        author BLOB NOT NULL,
        target BLOB NOT NULL,
        emoji TEXT NOT NULL,
        ts INTEGER NOT NULL
    );
    CREATE INDEX reactions_target ON reactions (target);
    CREATE TABLE reposts (
        entry INTEGER PRIMARY KEY REFERENCES entries (id),
        author BLOB NOT NULL,
        target BLOB NOT NULL,
        ts INTEGER NOT NULL
    );
    CREATE INDEX reposts_target ON reposts (target);
    CREATE TABLE graph (
        author BLOB NOT NULL,
        kind TEXT NOT NULL,
        target BLOB NOT NULL,
        active INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (author, kind, target)
    ) WITHOUT ROWID;
    CREATE INDEX graph_target ON graph (target, kind);
    CREATE TABLE profiles (
        feed BLOB PRIMARY KEY,
        name TEXT,
        bio TEXT,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE mutes (kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, value)) WITHOUT ROWID;
    CREATE TABLE tombstones (
        target BLOB PRIMARY KEY,
        author BLOB NOT NULL,
        entry BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE posts_fts USING fts5 (text, content='posts', content_rowid='entry');
    """,
    # 2: profile fields keep the seq that set each one, so a later profile that sets only the name
    #    keeps the bio whatever order the entries arrive in; tombstones are keyed by (target, author),
    #    so a delete naming someone else's entry cannot take the place of that author's own delete.
    """
    ALTER TABLE profiles ADD COLUMN name_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE profiles ADD COLUMN bio_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE profiles SET name_seq = CASE WHEN name IS NULL THEN 0 ELSE seq END,
        bio_seq = CASE WHEN bio IS NULL THEN 0 ELSE seq END;
    CREATE TABLE tombstones_v2 (
        target BLOB NOT NULL,
        author BLOB NOT NULL,
        entry BLOB NOT NULL,
        PRIMARY KEY (target, author)
    ) WITHOUT ROWID;
    INSERT INTO tombstones_v2 (target, author, entry) SELECT target, author, entry FROM tombstones;
    DROP TABLE tombstones;
    ALTER TABLE tombstones_v2 RENAME TO tombstones;
    """,
    # 3: the full-text index is filled in batches behind a watermark (projections.py); every post
    #    stored so far is indexed.
    """
    INSERT OR REPLACE INTO meta (key, value) VALUES ('fts_indexed', (SELECT coalesce(max(entry), 0) FROM posts));
    """,
    # 4: peers the node has met: how each was found, where it can be dialled, when it was last seen.
    """
    CREATE TABLE peers (
        feed BLOB PRIMARY KEY,
        addresses TEXT NOT NULL DEFAULT '[]',
        source TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        connected INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    # 5: the DHT: routing table contacts (so a restarted node rejoins without its bootstrap node), the
    #    swarms this node joined (``tidings swarm join``), and the members found in each swarm.
    """
    CREATE TABLE dht_contacts (
        node_id BLOB PRIMARY KEY,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        saved INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE swarms (name TEXT PRIMARY KEY, joined INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE swarm_members (
        swarm TEXT NOT NULL,
        member BLOB NOT NULL,
        addresses TEXT NOT NULL DEFAULT '[]',
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (swarm, member)
    ) WITHOUT ROWID;
    """,
    # 6: bridges (spec §14): their settings, the sources each follows or publishes to (with the state
    #    of their polling), and the items already carried, so each is imported or published once.
    """
    CREATE TABLE bridge_settings (
        bridge TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (bridge, key)
    ) WITHOUT ROWID;
    CREATE TABLE bridge_sources (
        bridge TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        feed BLOB,
        title TEXT,
        added INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        etag TEXT,
        last_modified TEXT,
        last_poll INTEGER,
        last_ok INTEGER,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        next_poll INTEGER NOT NULL DEFAULT 0,
        cursor INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (bridge, kind, source)
    ) WITHOUT ROWID;
    CREATE TABLE bridge_items (
        bridge TEXT NOT NULL,
        source TEXT NOT NULL,
        item TEXT NOT NULL,
        entry BLOB,
        done INTEGER NOT NULL,
        PRIMARY KEY (bridge, source, item)
    ) WITHOUT ROWID;
    CREATE INDEX bridge_items_entry ON bridge_items (entry) WHERE entry IS NOT NULL;
    """,
    # 7: timelines rank by the ranked time min(ts, received + skew), not the author's timestamp, so an
    #    entry dated in the future cannot stay on top (spec/ranking.md §1.1); they walk this index of
    #    it, which takes the place of the index of ts (nothing else orders by ts).
    f"""
    CREATE INDEX entries_rank ON entries ({rank_ts()});
    DROP INDEX entries_ts;
    """,
    # 8: profiles are searchable (``tidings search`` finds a name or a bio): ``profiles_fts`` holds
    #    each profile's name and bio under the profile's ``fts_row``, the row id of an entry of that
    #    feed (the first stored one here; for a profile written later, the entry that created it),
    #    so no two feeds share one. Updated with the profile, in the same transaction (projections).
    """
    ALTER TABLE profiles ADD COLUMN fts_row INTEGER;
    UPDATE profiles SET fts_row = (SELECT min(e.id) FROM entries e WHERE e.author = profiles.feed);
    CREATE INDEX profiles_fts_row ON profiles (fts_row);
    CREATE VIRTUAL TABLE profiles_fts USING fts5 (name, bio);
    INSERT INTO profiles_fts (rowid, name, bio) SELECT fts_row, name, bio FROM profiles WHERE fts_row IS NOT NULL;
    """,
    # 9: blobs (spec/protocol.md §8.5) held as files under HOME/blobs (storage/blobs.py): their size,
    #    when each was added and last used (gc evicts the least recently used first), and whether the
    #    user pinned it (``tidings blob add``: never evicted).
    """
    CREATE TABLE IF NOT EXISTS blobs (
        id BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        added INTEGER NOT NULL,
        last_used INTEGER NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS blobs_lru ON blobs (pinned, last_used);
    """,
    # 10: blobs the node wants from its peers (spec/protocol.md §12.12, storage/blob_wants.py): those
    #     entries of the feeds it replicates name, and those the user asked for (``author`` NULL); the
    #     size and mime the reference gave (NULL for a preview: at most ``most`` bytes), and when to try
    #     again after a failure (and why it failed).
    """
    CREATE TABLE IF NOT EXISTS blob_wants (
        id BLOB PRIMARY KEY,
        size INTEGER,
        most INTEGER NOT NULL,
        mime TEXT,
        author BLOB,
        added INTEGER NOT NULL,
        tries INTEGER NOT NULL DEFAULT 0,
        next_try INTEGER NOT NULL DEFAULT 0,
        failed TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS blob_wants_due ON blob_wants (next_try);
    """,
    # 11: private messages (spec/protocol.md §8.6, storage/messages.py): what this home's key opened of
    #     the boxes it stores, each read once, on ingest: the conversation (a hash of its participants),
    #     the author and the recipients (32-byte keys, concatenated), the text, what it answers, and
    #     whether it was read; ``problem`` says why a box opened for us but not its message
    #     (undecryptable: conversation, recipients and text are NULL). ``box_pending`` holds the boxes
    #     stored while the key was not at hand (a process without it), opened when it is.
    """
    CREATE TABLE IF NOT EXISTS messages (
        entry INTEGER PRIMARY KEY REFERENCES entries (id),
        conversation BLOB,
        author BLOB NOT NULL,
        recipients BLOB,
        text TEXT,
        reply BLOB,
        ts INTEGER NOT NULL,
        read INTEGER NOT NULL DEFAULT 0,
        problem TEXT
    );
    CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation, ts);
    CREATE TABLE IF NOT EXISTS box_pending (entry INTEGER PRIMARY KEY REFERENCES entries (id));
    INSERT OR IGNORE INTO box_pending (entry) SELECT id FROM entries WHERE type = 'box' AND deleted = 0;
    """,
    # 12: what was opened is sealed at rest (storage/messages.py): ``sealed`` holds the recipients, the
    #     text and the reply, sealed with the home's own key (``BoxKey.seal_local``), and
    #     ``conversation`` is a name only that key computes. Rows of version 11 keep their read flag
    #     and wait in ``box_pending`` to be opened again and sealed (by the next process with the key).
    """
    CREATE TABLE messages_sealed (
        entry INTEGER PRIMARY KEY REFERENCES entries (id),
        conversation BLOB,
        author BLOB NOT NULL,
        sealed BLOB,
        ts INTEGER NOT NULL,
        read INTEGER NOT NULL DEFAULT 0,
        problem TEXT
    );
    INSERT INTO messages_sealed (entry, author, ts, read, problem)
        SELECT entry, author, ts, read, problem FROM messages;
    INSERT OR IGNORE INTO box_pending (entry) SELECT entry FROM messages WHERE problem IS NULL;
    DROP TABLE messages;
    ALTER TABLE messages_sealed RENAME TO messages;
    CREATE INDEX messages_conversation ON messages (conversation, ts);
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; return the version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise CorruptStore(
            f"store schema {found} is newer than this Tidings ({SCHEMA_VERSION}); upgrade Tidings",
            code="store_too_new",
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check under the write lock: another process may have migrated meanwhile.
            now = conn.execute("PRAGMA user_version").fetchone()[0]
            if now == version:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(found)
