"""The producing side: change stream → convert → filter → encode → the hub.

``watcher`` tails the live change stream; ``producer`` takes each change through ``convert``
(with the post-images kept in ``images``), the filter pipeline and ``encode``, and publishes the
frames to the hub. ``history`` takes older changes of one flow down the same stages for a client
that catches up.
"""
