"""Tests for ``changesync.delivering.log_tail``: a log collection's text so far, by node."""

from __future__ import annotations

from typing import Any

from changesync.delivering.log_tail import log_tail, value_at
from changesync.routes import RouteOptions

OPTIONS = RouteOptions(snapshot="log")


def chunk(node: Any, text: Any, **extra: Any) -> dict[str, Any]:
    return {"flowId": "f", "executionId": "e1", "nodeId": node, "chunk": text, **extra}


def newest_first(*chunks: dict[str, Any]) -> list[dict[str, Any]]:
    return list(reversed(chunks))


class TestLogTail:
    def test_joins_each_nodes_chunks_oldest_first_in_order_of_their_first_chunk(self) -> None:
        """Interleaved chunks become one text per node; nodes come in the order they started."""
        chunks = newest_first(chunk("a", "Hel"), chunk("b", "Wor"), chunk("a", "lo"), chunk("b", "ld"), chunk("a", "!"))
        log = log_tail("LOG_STREAM", "e1", chunks, OPTIONS, read_all=True)
        assert log == {
            "eventType": "LOG_STREAM",
            "executionId": "e1",
            "nodes": [
                {"nodeId": "a", "text": "Hello!", "chunks": 3, "truncated": False},
                {"nodeId": "b", "text": "World", "chunks": 2, "truncated": False},
            ],
        }

    def test_keeps_the_tail_within_the_byte_bound_and_flags_it(self) -> None:
        """Over ``log_tail_bytes`` the oldest text goes, cut at a character boundary, and it says so."""
        options = RouteOptions(snapshot="log", log_tail_bytes=5)
        chunks = newest_first(chunk("a", "old "), chunk("a", "héé"), chunk("a", "ok"))
        (node,) = log_tail("LOG_STREAM", "e1", chunks, options, read_all=True)["nodes"]
        # "ok" (2 bytes) + the end of "héé" that fits in 3 bytes: "é" (2 bytes); "h" and "old " are gone.
        assert node == {"nodeId": "a", "text": "éok", "chunks": 2, "truncated": True}
        assert len(node["text"].encode()) <= 5

    def test_an_exact_fit_is_not_truncated_but_one_more_chunk_is(self) -> None:
        options = RouteOptions(snapshot="log", log_tail_bytes=4)
        (exact,) = log_tail("T", "e", newest_first(chunk("a", "ab"), chunk("a", "cd")), options, read_all=True)["nodes"]
        assert (exact["text"], exact["truncated"]) == ("abcd", False)
        more = newest_first(chunk("a", "x"), chunk("a", "ab"), chunk("a", "cd"))
        (cut,) = log_tail("T", "e", more, options, read_all=True)["nodes"]
        assert (cut["text"], cut["chunks"], cut["truncated"]) == ("abcd", 2, True)

    def test_a_read_cut_at_the_limit_flags_every_node(self) -> None:
        """When the read stopped at ``snapshot_limit``, older chunks may exist for any node."""
        log = log_tail("T", "e", newest_first(chunk("a", "x"), chunk("b", "y")), OPTIONS, read_all=False)
        assert [node["truncated"] for node in log["nodes"]] == [True, True]

    def test_chunks_without_text_are_skipped(self) -> None:
        """n8n may write a number, null or an object as the text: those chunks are left out."""
        chunks = newest_first(chunk("a", 42), chunk("a", None), chunk("a", {"t": "x"}), chunk("b", "fine"))
        log = log_tail("T", "e", [*chunks, {"flowId": "f", "nodeId": "c"}], OPTIONS, read_all=True)
        assert log["nodes"] == [{"nodeId": "b", "text": "fine", "chunks": 1, "truncated": False}]

    def test_odd_node_ids_group_by_value(self) -> None:
        """Node ids that are numbers, objects or missing still group chunks, each its own node."""
        chunks = newest_first(chunk(1, "a"), chunk({"k": 1}, "b"), chunk(1, "c"), {"chunk": "d"})
        log = log_tail("T", "e", chunks, OPTIONS, read_all=True)
        assert [(node["nodeId"], node["text"]) for node in log["nodes"]] == [(1, "ac"), ({"k": 1}, "b"), (None, "d")]

    def test_configured_field_paths(self) -> None:
        options = RouteOptions(snapshot="log", log_node="step.id", log_text="out.text")
        document = {"step": {"id": "s1"}, "out": {"text": "hi"}}
        (node,) = log_tail("T", "e", [document], options, read_all=True)["nodes"]
        assert (node["nodeId"], node["text"]) == ("s1", "hi")
        assert value_at(document, "step.missing") is None
