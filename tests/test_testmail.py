"""`wa-export test-email`: the installed CLI against a real STARTTLS+AUTH SMTP server."""

from __future__ import annotations

import io

import trustme
from openpyxl import load_workbook

from helpers import XLSX_MIME, attachments, parse_json, plain_body
from servers import LocalSmtpServer
from wa_export.workbook.writer import HEADER

WORKSPACE = "64ab00000000000000000001"


def test_delivers_the_sample_workbook(cli, make_env, smtp_server):
    result = cli(["test-email", "--to", "ops@example.com"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test email sent to ops@example.com" in result.stdout

    [captured] = smtp_server.messages
    assert captured.rcpt_tos == ["ops@example.com"]
    message = captured.message()
    assert message["Subject"].startswith("wa-export test email")
    assert "SMTP server" in plain_body(message)
    [(name, mime, payload)] = attachments(message)
    assert name.endswith(".xlsx") and mime == XLSX_MIME
    sheet = load_workbook(io.BytesIO(payload))["WhatsApp Messages"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0] == list(HEADER)
    assert rows[1][:3] == ["+10000000000", "+10000000001", "This is a wa-export test"]
    assert len(rows) == 3  # header + two fake rows: never real data


def test_workspace_addresses_and_json(cli, make_env, smtp_server):
    env = make_env(**{f"WORKSPACE_{WORKSPACE}_EMAIL": "a@company.test, b@company.test"})
    result = cli(["test-email", "--workspace", WORKSPACE, "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    assert document["ok"] is True and document["recipients"] == ["a@company.test", "b@company.test"]
    [captured] = smtp_server.messages
    assert sorted(captured.rcpt_tos) == ["a@company.test", "b@company.test"]
    assert WORKSPACE in captured.message()["Subject"]

    # --to wins over the workspace's configured addresses.
    result = cli(["test-email", "--workspace", WORKSPACE, "--to", "me@company.test"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert smtp_server.wait_for_messages(2)[1].rcpt_tos == ["me@company.test"]


def test_wrong_password_names_the_auth_step_and_app_passwords(cli, make_env, smtp_server):
    result = cli(["test-email", "--to", "ops@example.com"], env=make_env(SMTP_PASSWORD="wrong-horse-battery"))
    assert result.returncode == 1
    assert "step auth" in result.stderr and "app password" in result.stderr
    assert "wrong-horse-battery" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # smtplib tries each offered mechanism (PLAIN, LOGIN) on the one connection; none succeeds.
    assert smtp_server.auth_failures >= 1 and smtp_server.auth_successes == 0
    assert smtp_server.connection_count == 1 and smtp_server.messages == []


def test_untrusted_certificate_names_the_ca_file_and_never_falls_back(cli, make_env, smtp_server):
    # The client trusts smtp_server's CA; this server's certificate comes from another CA.
    with LocalSmtpServer(tls="starttls", certificate_authority=trustme.CA()) as stranger:
        env = make_env(SMTP_PORT=str(stranger.port), SMTP_CA_FILE=str(smtp_server.ca_cert_path))
        result = cli(["test-email", "--to", "ops@example.com", "--json"], env=env)
        assert result.returncode == 1
        document = parse_json(result)
        assert document["step"] == "tls" and "SMTP_CA_FILE" in document["error"]
        assert "SMTP_CA_FILE" in result.stderr and "not trusted" in result.stderr
        # No plaintext retry: one connection, no AUTH and no MAIL ever reached the server.
        assert stranger.connection_count == 1
        assert stranger.auth_successes == stranger.auth_failures == 0
        assert stranger.messages == []


def test_recipient_outside_allowed_domains_is_refused_before_connecting(cli, make_env, smtp_server):
    env = make_env(EXPORT_ALLOWED_EMAIL_DOMAINS="company.test")
    result = cli(["test-email", "--to", "someone@elsewhere.test"], env=env)
    assert result.returncode == 1
    assert "EXPORT_ALLOWED_EMAIL_DOMAINS" in result.stderr and "step domain" in result.stderr
    assert smtp_server.connection_count == 0


def test_a_workspace_whose_only_address_is_malformed_says_so_without_an_empty_recipient(cli, make_env, smtp_server):
    env = make_env(**{f"WORKSPACE_{WORKSPACE}_EMAIL": "not-an-address"})
    result = cli(["test-email", "--workspace", WORKSPACE], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("wa-export: test email failed at step recipient: "), result.stderr
    assert f"WORKSPACE_{WORKSPACE}_EMAIL" in result.stderr and "  " not in result.stderr.splitlines()[0]
    assert smtp_server.connection_count == 0


def test_unreachable_server_names_the_connect_step(cli, make_env, smtp_server):
    port = smtp_server.port
    smtp_server.stop()
    result = cli(["test-email", "--to", "ops@example.com"], env=make_env(SMTP_PORT=str(port)))
    assert result.returncode == 1
    assert "step connect" in result.stderr and "SMTP_SERVER/SMTP_PORT" in result.stderr


def test_no_destination_is_a_usage_error(cli, make_env):
    result = cli(["test-email"])
    assert result.returncode == 2
    assert "--to" in result.stderr and "--workspace" in result.stderr and "Traceback" not in result.stderr

    result = cli(["test-email", "--workspace", WORKSPACE])
    assert result.returncode == 2
    assert f"WORKSPACE_{WORKSPACE}_EMAIL" in result.stderr

    result = cli(["test-email", "--to", "not an address"])
    assert result.returncode == 2 and "--to" in result.stderr


def test_incomplete_smtp_settings_are_a_configuration_error(cli, make_env, smtp_server):
    result = cli(["test-email", "--to", "ops@example.com"], env=make_env(SMTP_SERVER=None))
    assert result.returncode == 2
    assert "step config" in result.stderr and "SMTP_SERVER" in result.stderr
    assert smtp_server.connection_count == 0


def test_from_display_name_is_configurable(cli, make_env, smtp_server):
    result = cli(["test-email", "--to", "ops@example.com"])  # SMTP_FROM_NAME unset: the default
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli(["test-email", "--to", "ops@example.com"], env=make_env(SMTP_FROM_NAME="Exporte Zürich"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli(["test-email", "--to", "ops@example.com"], env=make_env(SMTP_FROM_NAME=""))
    assert result.returncode == 0, result.stdout + result.stderr
    default, custom, bare = (captured.message()["From"] for captured in smtp_server.wait_for_messages(3))
    sender = make_env()["SMTP_FROM"]
    assert str(default) == f"WhatsApp Exports <{sender}>"
    assert str(custom) == f"Exporte Zürich <{sender}>"
    assert str(bare) == sender
