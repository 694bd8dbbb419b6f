"""Events/s through conversion + filter pipeline + JSON encoding, in one process (= one core).

    python -m benchmarks.pipeline [--smoke] [--seconds S]

For each typical event (``benchmarks.samples``), the service's path as ``Producer.drafts`` runs it:
``codec.encode_token`` (the frame's id) → conversion with the document cache (``LiveConverter``) →
the live ``Pipeline.process_all`` with the default routes → encoding (``producing.encode``).
Updates are measured on a sequence of consecutive updates of one document (``samples.update_sequence``: a node dragged,
a run progressing), which is how the cache sees them, and apart for first updates of documents
never seen before; the same sequence without the document cache (every update filtered in full)
gives the ratio the cache and the filtered-document memo make, in the same run. Also, each step
alone on the typical event (conversion and filtering without the cache), the service's whole
``Producer.on_change`` with no subscribers (adds metrics and the hub's replay buffer), and the
baseline: the raw change through ``json.dumps(default=str)`` / ``orjson.dumps`` with no filtering.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from changesync.codec import encode_token, to_change_event
from changesync.delivering.broadcast import Broker
from changesync.frames import change_draft
from changesync.hub.local import LocalHub
from changesync.hub.replay import ReplayBuffer
from changesync.metrics import Metrics
from changesync.producing.producer import Producer, build_producer
from changesync.settings import load_settings
from filters import Drop

from . import samples
from ._common import benchmark_parser, print_table, write_results

TARGET_EVENTS_PER_S = 30_000
# One timed round lasts about this long; the figure is the median round.
ROUND_S = 0.1
SMOKE_ROUND_S = 0.01
# Consecutive updates of one document, replayed round and round (a node dragged, a run progressing).
SEQUENCE_LENGTH = 2_000
# Updates of the sequence checked to give the same frames with and without the document cache.
EQUIVALENCE_CHECKS = 200


def producer(*, document_cache: bool = True) -> Producer:
    """The service's producer with the default settings (optionally without the document cache), as
    ``create_app`` builds it, publishing to an in-process hub without subscribers."""
    settings = load_settings(environ={} if document_cache else {"CHANGESYNC_STREAM_DOCUMENT_CACHE_BYTES": "0"})
    stream = settings.stream
    metrics = Metrics()
    hub = LocalHub(
        Broker(max_queue=stream.client_queue_size),
        ReplayBuffer(per_flow=stream.replay_per_flow, max_bytes=stream.replay_max_bytes),
        metrics,
    )
    return build_producer(settings, hub, metrics)


def frames_of(producer: Producer, change: dict[str, Any]) -> list[bytes]:
    """What the service publishes for ``change``: the changesync path, as ``Producer.drafts`` runs it
    (conversion with the document cache, the pipeline, one encoding per event), framed with the id
    the hub gives it."""
    drafts = producer.drafts(change)
    if not drafts:
        raise AssertionError(f"the sample was dropped: {change['operationType']} on {change['ns']['coll']}")
    identifier = encode_token(change["_id"]) + "~AAAAAAAA.1000"
    return [draft.framed(identifier).data for draft in drafts]


def cycling(changes: list[dict[str, Any]], step: Callable[[dict[str, Any]], Any]) -> Callable[[], Any]:
    """A zero-argument call that runs ``step`` on the next change, round and round."""
    upcoming = itertools.cycle(changes)
    return lambda: step(next(upcoming))


def first_updates(change: dict[str, Any], step: Callable[[dict[str, Any]], Any]) -> Callable[[], Any]:
    """A zero-argument call that runs ``step`` on ``change`` for a document id never seen before:
    every call is the first update of its document, as the cache sees it."""
    counter = itertools.count()

    def run() -> Any:
        fresh = dict(change)
        fresh["documentKey"] = {"_id": f"cold-{next(counter)}"}
        return step(fresh)

    return run


def check_output(name: str, change: dict[str, Any], sequence: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark measures the real path: the event is published, private fields are gone, and the
    document cache changes nothing: a sequence of updates gives the same frames with and without it."""
    frames = frames_of(producer(), change)
    for frame in frames:
        for secret in (b"credentials", b"secrets", b"__v", b"sk-"):
            assert secret not in frame, f"{name}: {secret!r} leaked into the frame"
    payload = orjson.loads(frames[0].split(b"data: ", 1)[1])
    if name == "canvas update":
        assert payload["patch"] == [{"op": "replace", "path": "/nodes/3/position/x", "value": 412.5}], payload["patch"]
    cached, uncached = producer(), producer(document_cache=False)
    for index, step in enumerate(sequence[:EQUIVALENCE_CHECKS]):
        assert frames_of(cached, step) == frames_of(uncached, step), f"{name}: update {index} differs with the cache"
    if change["operationType"] == "update":
        # First updates too: the cache then keeps the image, and the memo the projection, of each.
        cold_cached, cold_uncached = first_updates(change, cached.drafts), first_updates(change, uncached.drafts)
        for index in range(EQUIVALENCE_CHECKS // 10):
            assert [draft.payload for draft in cold_cached()] == [draft.payload for draft in cold_uncached()], (
                f"{name}: first update {index} differs with the cache"
            )
    return {
        "frames": len(frames),
        "frame_bytes": len(frames[0]),
        "raw_json_bytes": len(json.dumps(change, default=str)),
        "event_type": payload["type"],
    }


def _part(timed: dict[str, float], divisor: int = 4) -> dict[str, float]:
    return {"seconds": timed["seconds"] / divisor, "round_s": timed["round_s"]}


def rate(function: Callable[[], Any], *, seconds: float, round_s: float) -> dict[str, float]:
    """Median calls/s over rounds of about ``round_s``, for about ``seconds`` in all."""
    for _ in range(50):
        function()
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            function()
        elapsed = time.perf_counter() - started
        if elapsed >= round_s / 4:
            break
        calls *= 2
    calls = max(1, int(calls * round_s / elapsed))
    rates = []
    gc.collect()
    deadline = time.perf_counter() + seconds
    while len(rates) < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(calls):
            function()
        rates.append(calls / (time.perf_counter() - started))
    return {"per_s": statistics.median(rates), "best_per_s": max(rates), "rounds": len(rates)}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("pipeline", __doc__ or "")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement (default 2)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.05 if args.smoke else 2.0)
    round_s = SMOKE_ROUND_S if args.smoke else ROUND_S
    with contextlib.suppress(OSError):  # one core, so that the figure is per core
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    events: dict[str, Any] = {}
    rows = []
    for name, change in samples.typical_events().items():
        is_update = change["operationType"] == "update"
        sequence = samples.update_sequence(name, SEQUENCE_LENGTH) if is_update else [change]
        shape = check_output(name, change, sequence)
        converted = to_change_event(change)
        pipeline = producer(document_cache=False).pipeline
        processed = pipeline.process_all(converted)
        assert not isinstance(processed, Drop)
        position = encode_token(change["_id"])

        def encode_only(processed: tuple[Any, ...] = processed, position: str = position) -> None:
            for event in processed:
                change_draft(event, max_bytes=1 << 20)[0].framed(position)

        warm, cold, on_change, full = producer(), producer(), producer(), producer(document_cache=False)
        timed = {"seconds": seconds, "round_s": round_s}
        measured = {
            "convert": rate(lambda change=change: to_change_event(change), **_part(timed)),
            "filter": rate(functools.partial(pipeline.process_all, converted), **_part(timed)),
            "encode": rate(encode_only, **_part(timed)),
            "changesync": rate(cycling(sequence, functools.partial(frames_of, warm)), **timed),
            "changesync_without_cache": rate(cycling(sequence, functools.partial(frames_of, full)), **_part(timed, 2)),
            "changesync_first_update": rate(
                first_updates(change, functools.partial(frames_of, cold))
                if is_update
                else cycling(sequence, functools.partial(frames_of, cold)),
                **_part(timed, 2),
            ),
            "producer_on_change": rate(cycling(sequence, on_change.on_change), **_part(timed, 2)),
            "baseline_json": rate(lambda change=change: json.dumps(change, default=str), **_part(timed, 2)),
            "baseline_orjson": rate(lambda change=change: orjson.dumps(change, default=str), **_part(timed, 2)),
        }
        total = measured["changesync"]["per_s"]
        events[name] = {
            **shape,
            "events_per_s": {key: round(value["per_s"]) for key, value in measured.items()},
            "microseconds_per_event": {key: round(1e6 / value["per_s"], 2) for key, value in measured.items()},
            "ratio_cache_vs_without": round(total / measured["changesync_without_cache"]["per_s"], 3),
            "ratio_changesync_vs_json": round(total / measured["baseline_json"]["per_s"], 3),
            "ratio_changesync_vs_orjson": round(total / measured["baseline_orjson"]["per_s"], 3),
            "target_met": total >= TARGET_EVENTS_PER_S,
        }
        rows.append(
            [
                name,
                shape["frame_bytes"],
                measured["convert"]["per_s"],
                measured["filter"]["per_s"],
                measured["encode"]["per_s"],
                measured["changesync_first_update"]["per_s"],
                measured["changesync_without_cache"]["per_s"],
                total,
                f"{total / measured['changesync_without_cache']['per_s']:.2f}",
                measured["producer_on_change"]["per_s"],
                measured["baseline_json"]["per_s"],
                measured["baseline_orjson"]["per_s"],
                f"{total / measured['baseline_orjson']['per_s']:.2f}",
                "yes" if total >= TARGET_EVENTS_PER_S else "NO",
            ]
        )

    title = f"pipeline: events/s on one core (target >= {TARGET_EVENTS_PER_S:,}/s)"
    print_table(
        title + (" [SMOKE: figures meaningless]" if args.smoke else ""),
        [
            "event",
            "frame B",
            "convert",
            "filter",
            "encode",
            "1st update",
            "no cache",
            "changesync",
            "cache x",
            "on_change",
            "json.dumps",
            "orjson",
            "cs/orjson",
            "target",
        ],
        rows,
    )
    path = write_results(
        "pipeline",
        {
            "mode": "smoke" if args.smoke else "full",
            "config": {"seconds_per_measurement": seconds, "round_s": round_s},
            "load_average_at_end": os.getloadavg(),
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "events": events,
            "all_targets_met": all(event["target_met"] for event in events.values()),
        },
        file_name=args.results_name,
        directory=args.results_dir,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
