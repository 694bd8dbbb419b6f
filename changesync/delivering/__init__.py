"""The delivering side: the hub → subscribers → SSE.

``joins`` subscribes a client and plans its prologue (replay, catch-up, ``snapshot``);
``broadcast`` queues frames for each subscriber; ``stream`` writes them to the client's socket;
``housekeeping`` sends heartbeats and ends streams whose token expired or access was revoked.
"""
