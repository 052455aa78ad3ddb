"""A TCP forwarder that can cut one process off from Redis, like a network partition.

The fault campaign and the tests point one worker at the forwarder instead of Redis;
:meth:`NetCut.cut` then black-holes it (what a dropped link looks like from the
worker: open connections that never answer, new ones that connect and never
answer) and :meth:`NetCut.heal` ends the partition (open connections are reset, new
ones are forwarded again). Other processes keep talking to Redis directly.
"""
from __future__ import annotations

import asyncio
import threading

from .localredis import free_port


class NetCut:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host, self.port = host, free_port()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="netcut")

    def start(self) -> NetCut:
        self._thread.start()
        self._ready.wait(10)
        return self

    def url(self, redis_url: str) -> str:
        """``redis_url`` with the forwarder's address instead of Redis's."""
        return redis_url.replace(f"{self.target[0]}:{self.target[1]}", f"{self.host}:{self.port}")

    def cut(self) -> None:
        self._cut = True

    def heal(self) -> None:
        self._cut = False
        self._loop.call_soon_threadsafe(self._reset_all)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        self._reset_all()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, self.host, self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _client(self, reader, writer) -> None:
        self._writers.add(writer)
        while self._cut:  # connected, never answered
            if writer.is_closing():
                return
            await asyncio.sleep(0.1)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)
        for end in (writer, up_writer):
            end.close()
            self._writers.discard(end)

    async def _pipe(self, reader, writer) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if self._cut:
                continue  # dropped on the floor
            writer.write(data)
            await writer.drain()
        writer.close()
