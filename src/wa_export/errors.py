"""Exit codes and the errors an operator can cause: the CLI prints the sentence and exits with the error's code."""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    OK = 0  # everything asked for succeeded (including "no new messages")
    FAILED = 1  # some work failed: an export, a health check, a test email
    USAGE = 2  # usage or configuration error
    MONGO_UNAVAILABLE = 3  # MongoDB unreachable or refusing us

    @classmethod
    def worst(cls, codes: list[int] | tuple[int, ...]) -> ExitCode:
        # The order is the severity; an unknown code (a crash) counts as FAILED.
        return cls(max((code if code in list(cls) else cls.FAILED for code in codes), default=cls.OK))


class WaExportError(Exception):  # one sentence for the operator (what is wrong, what to do)
    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class UsageProblem(WaExportError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageProblem): ...  # a missing or invalid setting, named (never its secret value)


class UnknownWorkspace(UsageProblem): ...  # a workspace id given by the operator is malformed or does not exist


class SmtpNotConfigured(UsageProblem): ...  # the run would email but the SMTP settings are incomplete


class MongoUnavailable(WaExportError):
    exit_code = ExitCode.MONGO_UNAVAILABLE


class WorkspaceBusy(WaExportError): ...  # another run holds the workspace's lease: its cursor cannot change now
