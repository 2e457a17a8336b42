"""The Ray backend's poll loop when the cluster stops answering, without a cluster: the
actor's handle is a stand-in whose `.remote()` raises, as a `ray://` client does once its
connection is gone. The loop must set the actor aside and wait between tries (the revive's
pause), never spin on the event loop: a spinning loop starves every timer and task."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fanout.backends.ray import RayBackend, _Actor


class Gone:
    """A Ray method whose `.remote()` raises: the connection to the cluster is gone."""

    def __init__(self) -> None:
        self.calls = 0

    def remote(self, *args: Any) -> Any:
        self.calls += 1
        raise ConnectionError("ray client: connection closed")


class Handle:
    def __init__(self) -> None:
        self.poll = Gone()
        self.ping = Gone()


class NoCluster:
    """The `ray` module as far as the revive asks it: the head does not answer either."""

    def nodes(self) -> list[dict[str, Any]]:
        raise ConnectionError("ray client: connection closed")


def test_a_poll_that_cannot_reach_the_cluster_pauses_instead_of_spinning() -> None:
    backend = RayBackend()
    backend._ray = NoCluster()  # (what `start` sets once Ray is imported)
    actor = _Actor(Handle(), "节点一", cpu=True)

    async def main() -> int:
        ticks = 0
        poll = asyncio.create_task(backend._poll(actor))
        for _ in range(20):  # the event loop must keep turning while the poll fails
            await asyncio.sleep(0.01)
            ticks += 1
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        return ticks

    ticks: list[int] = []
    # in a thread of its own: a loop that never yields cannot be timed out from inside it
    runner = threading.Thread(target=lambda: ticks.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the poll loop never gave the event loop a turn"
    assert ticks == [20]
    assert actor.lost
    assert actor.handle.poll.calls <= 2  # once, then the revive waits (was: thousands)
