"""The queries changesync sends: the live change stream's pipeline."""

from changesync.queries import server_denied_paths, watch_pipeline
from filters import Route


class TestServerSidePipeline:
    def test_only_plain_patterns_shared_by_every_route_go_to_the_server(self):
        """The server removes what every route denies, in all three places; wildcards stay client-side."""
        routes = [
            Route("a", "A", deny=("secrets", "data.credentials", "nodes.*.x", "only.a")),
            Route("b", "B", deny=("secrets", "data.credentials", "nodes.*.x", "nodes.0.y")),
        ]
        assert server_denied_paths(routes) == [
            "fullDocument.data.credentials",
            "fullDocumentBeforeChange.data.credentials",
            "updateDescription.updatedFields.data.credentials",
            "fullDocument.secrets",
            "fullDocumentBeforeChange.secrets",
            "updateDescription.updatedFields.secrets",
        ]

    def test_match_covers_watched_collections_and_resets(self):
        """The $match selects data changes of watched collections, their drops and renames, and database-wide resets."""
        (match,) = watch_pipeline([Route("a", "A"), Route("b", "B")])
        branches = match["$match"]["$or"]
        assert branches[0]["ns.coll"] == {"$in": ["a", "b"]}
        assert set(branches[0]["operationType"]["$in"]) == {"insert", "update", "replace", "delete", "drop", "rename"}
        assert branches[1] == {"to.coll": {"$in": ["a", "b"]}, "operationType": "rename"}
        assert branches[2] == {"operationType": {"$in": ["dropDatabase", "invalidate"]}}
