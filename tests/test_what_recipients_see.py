"""What a business recipient sees in a real export mail: the sender's name and a readable workbook."""

from __future__ import annotations

import io
from datetime import timedelta

import openpyxl

from helpers import attachments
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.workbook.writer import HEADER


def test_export_mail_shows_the_sender_name_and_a_workbook_laid_out_for_people(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Café Olé")
    long_text = "Hello, I would like to know the status of my order and whether it ships this week. " * 4
    add_messages(
        mongo_db,
        add_chat(mongo_db, workspace_id),
        [
            {"content": long_text, "timestamp": utcnow() - timedelta(minutes=3)},
            {"content": "ok", "timestamp": utcnow() - timedelta(minutes=2)},
        ],
    )
    env = make_env(EXPORT_TIMEZONE="Asia/Kolkata", **{f"WORKSPACE_{workspace_id}_EMAIL": "team@cafe.test"})
    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    (captured,) = smtp_server.wait_for_messages(1)
    message = captured.message()
    assert str(message["From"]) == f"WhatsApp Exports <{env['SMTP_FROM']}>"
    (name, _, payload) = attachments(message)[0]
    assert name.startswith("cafe_ole_whatsapp_messages_")
    workbook = openpyxl.load_workbook(io.BytesIO(payload))
    properties = workbook.properties
    assert properties.creator == "wa-export"
    assert properties.title.startswith("WhatsApp messages")
    assert properties.subject == "Timestamps in Asia/Kolkata"
    sheet = workbook.active
    assert [cell.value for cell in sheet[1]] == list(HEADER)
    assert sheet["C2"].value == long_text and sheet["C2"].alignment.wrap_text
    for letter, title in zip("ABCDEF", HEADER, strict=True):
        assert sheet.column_dimensions[letter].width >= len(title) + 3
