import pytest

from changesync.producing.images import Kept, PostImages


class TestPostImages:
    def test_keeps_the_latest_image_per_document(self):
        """An image is found by collection and key; a newer one replaces it without eviction."""
        evicted = []
        images = PostImages(1000, on_evict=lambda collection, document: evicted.append(document))
        first, second, other = {"v": 1}, {"v": 2}, {"v": 3}
        images.put("boards", b"b1", first, 10)
        images.put("boards", b"b1", second, 12, 1)
        images.put("nodes", b"b1", other, 10)
        assert images.get("boards", b"b1") == Kept(second, 12, 1)
        assert images.holds("boards", b"b1", second)
        assert not images.holds("boards", b"b1", {"v": 2})  # an equal document is not the kept one
        assert images.get("nodes", b"b1") == Kept(other, 10, 0)
        assert images.get("boards", b"b2") is None
        assert (len(images), images.counted_bytes) == (2, 22)
        assert evicted == []  # the replaced image is the caller's to let go

    def test_budget_evicts_least_recently_updated(self):
        """Over the byte budget, the document updated longest ago goes first, and on_evict hears of it."""
        evicted = []
        images = PostImages(30, on_evict=lambda collection, document: evicted.append((collection, document)))
        for index in range(3):
            images.put("c", bytes([index]), {"i": index}, 10)
        images.put("c", bytes([0]), {"i": 0, "again": True}, 10)  # 0 is now the most recent
        images.put("c", bytes([3]), {"i": 3}, 10)
        assert evicted == [("c", {"i": 1})]
        assert images.get("c", bytes([1])) is None
        assert images.get("c", bytes([0])) is not None
        assert images.counted_bytes == 30

    def test_an_image_larger_than_the_budget_is_not_kept(self):
        """A document over the whole budget is let go at once instead of evicting everything else."""
        evicted = []
        images = PostImages(100, on_evict=lambda collection, document: evicted.append(document))
        images.put("c", b"small", {"s": 1}, 10)
        images.put("c", b"big", {"b": 1}, 101)
        assert images.get("c", b"big") is None
        assert images.get("c", b"small") is not None
        assert evicted == [{"b": 1}]

    def test_discard_and_clear_release_everything(self):
        """Discarded and cleared images are reported to on_evict and no longer counted."""
        evicted = []
        images = PostImages(1000, on_evict=lambda collection, document: evicted.append(document))
        images.put("c", b"1", {"a": 1}, 10)
        images.put("c", b"2", {"a": 2}, 10)
        images.discard("c", b"1")
        images.discard("c", b"unknown")
        assert evicted == [{"a": 1}]
        images.clear()
        assert evicted == [{"a": 1}, {"a": 2}]
        assert (len(images), images.counted_bytes) == (0, 0)

    def test_zero_budget_disables(self):
        """A budget of 0 keeps nothing; a negative one is refused."""
        images = PostImages(0)
        assert not images.enabled
        images.put("c", b"1", {"a": 1}, 1)
        assert images.get("c", b"1") is None
        with pytest.raises(ValueError, match="max_bytes must be >= 0, got -1"):
            PostImages(-1)
