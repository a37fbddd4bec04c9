"""Drives a VM's QMP socket with QEMU's own client library (qemu.qmp).

Usage: standard_client.py SOCKET. Prints one line per check; exits non-zero
(with a traceback) on the first failure.
"""
import asyncio
import sys

from qemu.qmp import ExecuteError, QMPClient


async def main(path: str) -> None:
    qmp = QMPClient("maqet-test")
    await qmp.connect(path)  # greeting + qmp_capabilities
    print("greeting", qmp.greeting)

    status = await qmp.execute("query-status")
    assert status["status"] == "running", status
    print("query-status", status["status"])

    # An event: STOP after `stop`, received through the library's listener.
    with qmp.listener("STOP") as listener:
        await qmp.execute("stop")
        event = await asyncio.wait_for(listener.get(), 30)
    assert event["event"] == "STOP", event
    print("event", event["event"])
    await qmp.execute("cont")

    # Behind maqet's policy: HMP is refused with a QMP error.
    try:
        await qmp.execute("human-monitor-command", {"command-line": "info status"})
    except ExecuteError as e:
        assert e.error_class == "GenericError", e.error_class
        assert "maqet" in e.error.error.desc, e.error.error.desc
        print("refused", e.error_class, e.error.error.desc)
    else:
        raise AssertionError("human-monitor-command was forwarded")

    # QEMU's own errors keep their class.
    try:
        await qmp.execute("device_del", {"id": "no-such-device"})
    except ExecuteError as e:
        print("qemu-error", e.error_class)
    else:
        raise AssertionError("device_del of a missing device succeeded")

    await qmp.disconnect()
    print("done")


asyncio.run(main(sys.argv[1]))
