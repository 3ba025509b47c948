"""The softphone's socket sends `hello` first, even when others send to it while `hello` is made.

CI once saw a colleague list (`operators`, sent when another softphone came) arrive before `hello`:
the softphone joins the roster before its `hello` is put together (so as to miss no ring), and that
takes database reads. Told through a stand-in for the WebSocket, which records what is sent in order.
"""

from __future__ import annotations

from collections.abc import Mapping

from callserver.signaling.operator_socket import OperatorConnection


class RecordingSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[Mapping[str, object]] = []

    async def send_json(self, message: Mapping[str, object]) -> None:
        self.sent.append(message)


async def test_what_comes_before_hello_waits_and_follows_it_in_order() -> None:
    ws = RecordingSocket()
    softphone = OperatorConnection(ws)  # type: ignore[arg-type]
    await softphone.send({"type": "operators", "operators": []})
    await softphone.incoming({"id": "c1"})
    assert ws.sent == []
    await softphone.greet({"type": "hello"})
    await softphone.withdrawn("c1", "timeout")
    assert [m["type"] for m in ws.sent] == ["hello", "operators", "call.incoming", "call.withdrawn"]


async def test_a_socket_that_closed_before_hello_gets_nothing() -> None:
    ws = RecordingSocket()
    softphone = OperatorConnection(ws)  # type: ignore[arg-type]
    await softphone.send({"type": "operators", "operators": []})
    ws.closed = True
    await softphone.greet({"type": "hello"})
    assert ws.sent == []
