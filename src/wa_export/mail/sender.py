"""The per-run sender: one SMTP connection for every mail of a run, and its failure policy."""

from __future__ import annotations

from contextlib import AbstractContextManager

from wa_export.mail.errors import MailError
from wa_export.mail.message import OutgoingMail, build_message, check_attachment, check_recipients, check_sendable
from wa_export.mail.transport import YagmailConnection
from wa_export.settings import Settings


class MailSender(AbstractContextManager["MailSender"]):
    """Sends every mail of a run over one SMTP connection, reopened once if the server closed it between sends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections_opened = 0
        self._client: YagmailConnection | None = None

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, polite: bool = True) -> None:
        """Close the connection: with QUIT, or dropped (polite=False: it is dead or in an unknown state)."""
        client, self._client = self._client, None
        if client is not None:
            (client.close if polite else client.discard)()

    def verify_login(self) -> None:
        """Connect, secure and log in (no mail sent): for `health --smtp-login` and `test-email`."""
        check_sendable(self.settings)
        self._connection()

    def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail` to exactly `mail.to`, or raise MailError."""
        settings = self.settings
        check_sendable(settings)
        check_recipients(mail.to, settings)
        data = check_attachment(mail.attachment, settings) if mail.attachment is not None else None
        payload = build_message(mail, settings.smtp_from or "", data, sender_name=settings.smtp_from_name)
        del data  # the file's bytes are not needed while the (larger) message goes out
        while True:
            client, reused = self._connection()
            # Never yagmail's send(), which returns False once its retries are spent and re-sends after a
            # disconnect: _attempt_send is one transaction that raises MailError on every failure.
            try:
                return client._attempt_send(list(mail.to), payload)
            except MailError as error:
                if error.step == "connect":  # the connection was gone before the message went out
                    self.close(polite=False)
                if error.step != "connect" or not reused:  # else the server closed an idle connection: retry once
                    raise
            except BaseException:  # e.g. Ctrl-C mid-transaction: a QUIT now would be read as part of the message
                self.close(polite=False)
                raise

    def _connection(self) -> tuple[YagmailConnection, bool]:
        if self._client is not None and self._client.alive():
            return self._client, True
        self.close(polite=False)
        client = YagmailConnection(self.settings)
        client.login()
        self._client = client
        self.connections_opened += 1
        return client, False
