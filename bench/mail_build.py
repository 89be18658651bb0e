"""CPU and peak memory of building one export email (`build_message`), for bench/RESULTS.md.

Usage: python bench/mail_build.py  (a typical export email: ~7 KB workbook, accented names;
then one attachment just under EXPORT_MAX_ATTACHMENT_MB=20 once encoded).
"""

from __future__ import annotations

import os
import tempfile
import time
import timeit
import tracemalloc
from pathlib import Path

from wa_export.mail.message import OutgoingMail, build_message

SENDER = "exports@example.com"
BODY = (
    "WhatsApp messages export\n\nWorkspace: Café Zürich (65a1b2c3d4e5f60718293a4b)\n"
    "Messages from 2026-12-01 19:30:00 to 19:45:00 (Europe/Berlin)\n"
    "Total messages: 5\nBy status:\n  received: 3\n  sent_via_ai: 2\n"
    "File: cafe_zurich_whatsapp_messages_2026-12-01_19-45.xlsx\n\nSent automatically by wa-export.\n"
)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cafe_zurich_whatsapp_messages_2026-12-01_19-45.xlsx"
        path.write_bytes(os.urandom(7_000))
        mail = OutgoingMail(
            to=("ops@example.com",),
            subject="WhatsApp Messages Export - Café Zürich - 2026-12-01 19:45",
            body=BODY,
            attachment=path,
        )
        data = path.read_bytes()
        number, repeat = 500, 7
        best = min(
            timeit.repeat(
                lambda: build_message(mail, SENDER, data, sender_name="WhatsApp Exports"),
                number=number,
                repeat=repeat,
                timer=time.process_time,
            )
        )
        print(f"typical email: {best / number * 1000:.3f} ms CPU per message (best of {repeat} x {number})")

        big = os.urandom(15 * 2**20 - 4096)  # ~20 MB once base64-encoded
        path.write_bytes(big)
        started = time.process_time()
        payload = build_message(mail, SENDER, big, sender_name="WhatsApp Exports")
        cpu = time.process_time() - started
        del payload
        tracemalloc.start()  # after timing: tracing slows allocation down
        payload = build_message(mail, SENDER, big, sender_name="WhatsApp Exports")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"{len(big) / 2**20:.1f} MB attachment ({len(payload) / 2**20:.1f} MB message): "
            f"{cpu * 1000:.0f} ms CPU, peak {peak / 2**20:.0f} MB allocated while building"
        )


if __name__ == "__main__":
    main()
