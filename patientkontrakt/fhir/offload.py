"""CPU-heavy steps of a request without holding up the other requests (docs/performance.md).

One process serves many requests on one event loop: while a request parses, validates or renders,
no other request moves. Validating a 20 KB resource takes about 30 ms, so a 10 MB transaction held
every other request for 8-22 s at a time (docs/performance.md). ``run_cpu`` runs such a step,
given an estimate of its cost:

- in a worker thread when the estimate is over ``THREAD_ABOVE``: the loop goes on serving while
  the thread holds the interpreter, which Python hands back every few milliseconds;
- inline otherwise, where a thread hop (about 0.1 ms) would cost more than it saves, but first
  letting the loop serve others if this request's steps began more than ``SLICE`` seconds ago
  (since it last let them): the entries of a Bundle of many small ones then take turns with
  other requests.

The read path never comes here. The estimates are seconds per byte of JSON, measured on the
benchmark machine (docs/performance.md, "The event loop"), rounded up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import orjson

P = ParamSpec("P")
T = TypeVar("T")

THREAD_ABOVE = 0.02
SLICE = 0.01
PARSE = 0.15e-6  # parse_body: orjson and the walk for depth and U+0000
COPY = 0.25e-6  # a deep copy of parsed JSON
VALIDATE = 2e-6  # FhirService.prepare: the structure (definitions, models), then the domain's rules
RULES = 0.3e-6  # FhirService.apply_rules alone: the domain's normalisation and profile rules
RENDER = 0.01e-6  # splicing stored JSON into a Bundle
SUBSET = 0.05e-6  # _summary, _elements: each body parsed and written again

_slice_start: ContextVar[float] = ContextVar("cpu_slice_start", default=0.0)


async def run_cpu(cost: float, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, off the event loop or after a yield as the module says; ``cost``
    is the estimate of its seconds (one of the per-byte figures above times the bytes)."""
    if cost > THREAD_ABOVE:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            _slice_start.set(time.monotonic())
    now, start = time.monotonic(), _slice_start.get()
    if not start:  # the request's first step: a small request never waits for the loop
        _slice_start.set(now)
    elif now - start > SLICE:
        await asyncio.sleep(0)
        _slice_start.set(time.monotonic())
    return fn(*args, **kwargs)


def weight_of(resource: Any) -> int:
    """The size of ``resource`` as JSON, in bytes: what validating or copying it works through
    (measuring it costs about 1/1000 of validating it)."""
    try:
        return len(orjson.dumps(resource))
    except TypeError:  # orjson's JSONEncodeError (e.g. nesting it will not write): nothing to weigh
        return 0
