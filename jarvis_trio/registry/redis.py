"""The Redis registry: the I/O edge of :mod:`jarvis_trio.registry.fencing`.

Why redis-py in trio worker threads
-----------------------------------
trio has no maintained native Redis client, and redis-py's asyncio client cannot
run under trio. redis-py's synchronous client is the reference client, thread
safe through its connection pool, and every call here is a single short round
trip (the decisions are Lua scripts, so each step is one atomic command). So
each call runs in ``trio.to_thread.run_sync`` on a limiter of its own (Redis
calls never take the upstream readers' threads) and is bounded twice: by
redis-py's socket timeouts (connect and read, ``JARVIS_REGISTRY_TIMEOUT``) and
by ``abandon_on_cancel=True``, so a cancelled request never waits for a thread.
redis-py's own retries are off: a call that fails is reported at once as
:class:`~jarvis_trio.errors.RegistryUnavailable` (a 503), not retried behind the
client's back.

Pub/sub runs in one long-lived worker thread that polls
``get_message(timeout=0.2)`` and checks ``trio.from_thread.check_cancelled()``
between polls, so shutdown never waits more than one poll for it. When the
subscription breaks (Redis restarted), it reconnects every half second; messages
published meanwhile are lost, which the fencing tolerates: waiters poll the lease
and live streams find out at their next renewal.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from jarvis_trio import logs
from jarvis_trio.errors import RegistryUnavailable
from jarvis_trio.registry import Claim
from jarvis_trio.registry.fencing import (
    CHANNEL,
    GENERATION_TTL_MS,
    SECRET_KEY,
    Message,
    MessageKind,
    TakeResult,
    decode,
    encode,
    keys_for,
    lease_ms,
    must_force,
    next_look,
    owner_label,
    session_digest,
    stop_result,
    take_result,
)

T = TypeVar("T")

# KEYS: generation, secret, lease. ARGV: ttl ms, channel, digest, worker, secret, kind
# ('cancel' for a request, 'stop' for a Stop). Replies the generation, and whether a
# stream held the session's lease at that moment.
# The generation only grows: +1, floored at Redis's clock in microseconds, so it keeps
# growing after a restart that lost the counter. The secret is re-seeded so that
# processes keep agreeing on digests after such a restart; if another process re-seeded
# it first with a secret of its own, the reply is {'', 0, its secret}: the caller adopts
# it and claims again, so every new claim agrees on the session's digest.
CLAIM_SCRIPT = """
local stored = redis.call('GET', KEYS[2])
if not stored then
  redis.call('SET', KEYS[2], ARGV[5])
elseif stored ~= ARGV[5] then
  return {'', 0, stored}
end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local gen = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
if gen < floor then gen = floor end
local text = string.format('%d', gen)
redis.call('SET', KEYS[1], text, 'PX', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[6] .. ' ' .. ARGV[3] .. ' ' .. text .. ' ' .. ARGV[4])
return {text, redis.call('EXISTS', KEYS[3])}
"""

# KEYS: generation, lease. ARGV: generation, lease ms, force ('1' or '0'), ttl ms.
# Replies are fencing.TakeResult: 0 stale, 1 busy, 2 taken, 3 forced. A counter below
# our generation (or none) means Redis lost its data: a restart without persistence.
# Ours is then the newest there is (claims are floored at Redis's clock), so it is
# written back, and a stream that was live through the restart goes on.
TAKE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(ARGV[1])
if current > mine then return 0 end
if current < mine then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 2
end
if holder and ARGV[3] ~= '1' then return 1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if holder then return 3 end
return 2
"""

# KEYS: lease. ARGV: generation, channel, finished message.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

SUBSCRIBE_POLL_SECONDS = 0.2
RESUBSCRIBE_SECONDS = 0.5
REDIS_THREADS = 32


class RedisRegistry:
    """Implements :class:`~jarvis_trio.registry.Registry` on one Redis server."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float,
        timeout: float,
        worker: str,
        secret: str | None = None,
    ) -> None:
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.timeout = timeout
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            max_connections=REDIS_THREADS + 2,
        )
        self._claim = self._client.register_script(CLAIM_SCRIPT)
        self._take = self._client.register_script(TAKE_SCRIPT)
        self._release = self._client.register_script(RELEASE_SCRIPT)
        self._limiter = trio.CapacityLimiter(REDIS_THREADS)
        # The subscriber's thread is never one of the calls': a burst of calls cannot
        # keep the subscription from running.
        self._listener_limiter = trio.CapacityLimiter(1)
        # Invariant: every digest and label derives from it. From the configuration
        # (fixed), or from Redis: then replaced only when a claim finds that Redis (after
        # losing its data) holds another one.
        self._secret: str | None = secret
        self._configured_secret = secret is not None
        # Waiters for a session's ``finished`` message, by digest; replaced once set.
        self._freed: dict[str, trio.Event] = {}
        self._freed_waiters: collections.Counter[str] = collections.Counter()
        # The listener's thread holds a subscription now (True until a first attempt
        # failed, so that the first failure is logged, and only it).
        self.subscribed = True

    # -- calls

    async def _call(self, fn: Callable[[], T]) -> T:
        # redis-py's socket timeouts bound the thread; this bounds the wait for it
        # (a call is one script, so at most a connect and one reply).
        try:
            with trio.fail_after(2 * self.timeout + 0.5):
                return await trio.to_thread.run_sync(
                    fn, limiter=self._limiter, abandon_on_cancel=True
                )
        except (redis.RedisError, OSError, trio.TooSlowError) as exc:
            raise RegistryUnavailable(
                f"The session registry (Redis) is unavailable: {type(exc).__name__}."
            ) from exc

    async def _shared_secret(self) -> str:
        if self._secret is None:
            proposal = secrets.token_hex(16)

            def fetch() -> str:
                self._client.set(SECRET_KEY, proposal, nx=True)
                return cast(str, self._client.get(SECRET_KEY)) or proposal

            self._secret = await self._call(fetch)
        return self._secret

    async def claim(self, owner: str, session_id: str, *, stop: bool = False) -> Claim:
        for _ in range(2):  # a second pass only after adopting another process's secret
            secret = await self._shared_secret()
            digest = session_digest(secret.encode(), owner, session_id)
            keys = keys_for(digest)
            kind = MessageKind.STOP if stop else MessageKind.CANCEL
            args: list[str | int] = [GENERATION_TTL_MS, CHANNEL, digest, self.worker, secret, kind]
            claim_keys = [keys.generation, SECRET_KEY, keys.lease]
            call = partial(self._claim, keys=claim_keys, args=args)
            reply = cast(list[Any], await self._call(call))
            if len(reply) == 2:
                break
            if self._configured_secret:
                raise RegistryUnavailable(
                    "Redis holds another shared secret than this gateway's "
                    "JARVIS_REGISTRY_SECRET: give every gateway the same one."
                )
            # Redis lost its data and another process seeded a new secret before us.
            logs.event("registry_secret_changed", level=logging.WARNING, worker=self.worker)
            self._secret = str(reply[2])
        else:
            raise RegistryUnavailable("The session registry's shared secret keeps changing.")
        generation, held = reply
        return Claim(
            session=digest,
            generation=int(generation),
            contended=bool(held),
            owner_label=owner_label(secret.encode(), owner),
            claimed_at=trio.current_time(),
        )

    async def _try_take(self, claim: Claim, force: bool) -> TakeResult:
        keys = keys_for(claim.session)
        args: list[str | int] = [
            str(claim.generation),
            lease_ms(self.lease_seconds),
            "1" if force else "0",
            GENERATION_TTL_MS,
        ]
        reply = await self._call(lambda: self._take(keys=[keys.generation, keys.lease], args=args))
        return take_result(reply)

    async def take(self, claim: Claim, deadline: float) -> TakeResult:
        result, _ = await self._wait_lease(claim, deadline)
        return result

    async def wait_stopped(self, claim: Claim, deadline: float) -> str:
        result, waited = await self._wait_lease(claim, deadline)
        if result is not TakeResult.STALE:
            await self.release(claim)
        # The holder may have given the lease back before our first look: it was
        # still stopped by us if it held the lease when the Stop was claimed.
        return stop_result(result, waited or claim.contended)

    async def _wait_lease(self, claim: Claim, deadline: float) -> tuple[TakeResult, bool]:
        """Take the lease, waiting for its holder (until ``deadline``); whether we waited."""
        # Bounded: each pass either ends or waits until the next look, and past the
        # deadline the take is forced, which always ends.
        waited = False
        self._freed_waiters[claim.session] += 1
        try:
            while True:
                freed = self._freed.setdefault(claim.session, trio.Event())
                result = await self._try_take(claim, must_force(trio.current_time(), deadline))
                if result is not TakeResult.BUSY:
                    return result, waited
                waited = True
                with trio.move_on_at(next_look(trio.current_time(), deadline)):
                    await freed.wait()
        finally:
            # Invariant: an entry of _freed exists only while someone waits on it, so a
            # take that never waited, or whose "finished" never came, leaves nothing.
            self._freed_waiters[claim.session] -= 1
            if not self._freed_waiters[claim.session]:
                del self._freed_waiters[claim.session]
                self._freed.pop(claim.session, None)

    async def renew(self, claim: Claim) -> bool:
        return await self._try_take(claim, force=False) is not TakeResult.STALE

    async def release(self, claim: Claim) -> None:
        keys = keys_for(claim.session)
        message = encode(
            Message(MessageKind.FINISHED, claim.session, claim.generation, self.worker)
        )
        args = [str(claim.generation), CHANNEL, message]
        await self._call(lambda: self._release(keys=[keys.lease], args=args))

    # -- messages

    async def serve(
        self,
        on_cancel: Callable[[Message], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        def deliver(message: Message) -> None:
            if message.kind is MessageKind.FINISHED:
                freed = self._freed.pop(message.session, None)
                if freed is not None:
                    freed.set()
            else:
                try:
                    on_cancel(message)
                except Exception:
                    # A bug here must cost one message, not the subscription (an
                    # exception would end the listener's thread and the server's nursery).
                    logs.log.exception("registry_message_failed message=%s", encode(message))

        task_status.started()
        # Runs for the server's life (cancelled at shutdown); each pass is bounded by
        # the thread's polls and the pause below. Only the first failure of a run of
        # failures is logged (Redis may be down for long).
        while True:
            try:
                await trio.to_thread.run_sync(self._listen, deliver, limiter=self._listener_limiter)
            except (redis.RedisError, OSError) as exc:
                if self.subscribed:
                    logs.event(
                        "registry_subscription_lost",
                        level=logging.WARNING,
                        worker=self.worker,
                        error=type(exc).__name__,
                    )
                self.subscribed = False
            await trio.sleep(RESUBSCRIBE_SECONDS)

    def _listen(self, deliver: Callable[[Message], None]) -> None:
        """In a worker thread: subscribe, then hand every message to trio, until cancelled."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(CHANNEL)
            self.subscribed = True
            logs.event("registry_subscribed", worker=self.worker)  # logging is thread safe
            while True:
                trio.from_thread.check_cancelled()
                try:
                    raw: dict[str, Any] | None = pubsub.get_message(timeout=SUBSCRIBE_POLL_SECONDS)
                    message = decode(raw["data"]) if raw and raw.get("type") == "message" else None
                except (UnicodeDecodeError, ValueError, TypeError, KeyError):
                    # Anyone who can publish on the channel can send anything: one bad
                    # message costs itself, never the subscription (or the worker).
                    logs.event("registry_message_failed", level=logging.WARNING, worker=self.worker)
                    continue
                if message is not None:
                    trio.from_thread.run_sync(deliver, message)
        finally:
            pubsub.close()

    async def aclose(self) -> None:
        with trio.move_on_after(self.timeout + 0.5):
            await trio.to_thread.run_sync(self._client.close, abandon_on_cancel=True)
