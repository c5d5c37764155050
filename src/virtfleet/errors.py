"""virtfleet's one error hierarchy.

Every failure a user can see is one of these. The CLI turns them into a one-line message and an
exit code; fan-out code reports them per host. `retryable` says whether trying the same thing
again later may succeed (a host that did not answer) or not (a name that breaks a rule).
"""

from __future__ import annotations

import re

# Where a class name's next word starts: "HostUnavailable" -> host-unavailable, and an acronym
# is one word: "VMNotFound" -> vm-not-found.
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class VirtfleetError(Exception):
    """Base of every error virtfleet raises on purpose.

    The subject travels as fields (`host`, `vm`, and `field` for bad input), never inside
    `detail`: a per-host table prints `detail` in the host's row, the CLI prints the whole
    `message`, the API returns `as_json()`. Errors made before the subject fields existed carry
    the subject inside `detail` instead; they render the same.
    """

    exit_code = 1
    retryable = False

    def __init__(self, detail: str, *, host: str | None = None, vm: str | None = None) -> None:
        self.detail = detail
        self.host = host
        self.vm = vm
        super().__init__(detail)

    @property
    def subject(self) -> str | None:
        """What the error is about, as the CLI names it: `host/vm`, `host`, or `vm`."""
        if self.host and self.vm:
            return f"{self.host}/{self.vm}"
        return self.host or self.vm

    @property
    def message(self) -> str:
        """One line for a person: the subject, then the detail."""
        return f"{self.subject}: {self.detail}" if self.subject else self.detail

    def __str__(self) -> str:
        return self.message

    def in_row(self, host: str, vm: str | None = None) -> str:
        """The message as a table row for `host` (and `vm`) prints it: without the subject the
        row already shows."""
        row = f"{host}/{vm}" if vm else host
        return self.message.removeprefix(f"{row}: ")

    def add(self, more: str) -> None:
        """Say more about what happened (what was undone after the failure, say)."""
        self.detail += more
        self.args = (self.detail,)

    @property
    def kind(self) -> str:
        """Short machine-readable name for --json output ("not-found", "host-unavailable",
        "vm-not-found": an acronym stays one word)."""
        return _WORD_START.sub("-", type(self).__name__).lower()

    def as_json(self) -> dict[str, object]:
        """The error as scripts and the API see it: its kind, its subject fields, its detail."""
        out: dict[str, object] = {"error": self.kind, "message": self.detail}
        for key in ("host", "vm"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


class InvalidInput(VirtfleetError):
    """Input broke a rule. Always names the field and the rule; exit code 2 like a usage error.

    `field` is the request's own name for what was wrong; only the CLI words it as an option.
    """

    exit_code = 2

    def __init__(self, field: str, rule: str, *, host: str | None = None,
                 vm: str | None = None) -> None:
        super().__init__(rule, host=host, vm=vm)
        self.field = field
        self.rule = rule

    @property
    def message(self) -> str:
        where = f"{self.subject}: " if self.subject else ""
        return f"{where}{self.field}: {self.detail}"

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), "field": self.field}


class NotFound(VirtfleetError):
    exit_code = 3


class Conflict(VirtfleetError):
    """The request clashes with what exists (a duplicate name, a VM that is running)."""

    exit_code = 4


class StaleLease(Conflict):
    """A controller wrote for a shard (a site) under a fencing token that is no longer the
    lease's: it lost the lease (a pause, a partition) and another controller acts there now."""


class TakenOver(Conflict):
    """An operation's journal row is no longer this process's: its owner was judged dead and
    another process (a controller, `ops cleanup`) claimed it to undo it. The former owner must
    neither go on nor undo anything itself: the claimer does that, once."""

    def __init__(self, detail: str, *, operation: str) -> None:
        super().__init__(detail)
        self.operation = operation

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), "operation": self.operation}


class Busy(Conflict):
    """Another operation holds the object; try again when it is done."""

    retryable = True


class HostUnavailable(VirtfleetError):
    """A hypervisor could not be reached, refused us, or its connection died."""

    retryable = True


class OperationTimeout(VirtfleetError):
    """A call to a hypervisor did not finish within its deadline."""

    retryable = True


class HypervisorError(VirtfleetError):
    """libvirt refused or failed an operation for a reason that is not about reachability."""


class StoreError(VirtfleetError):
    """The inventory store could not be opened, migrated or written."""


class ToolFailed(VirtfleetError):
    """An external tool virtfleet runs (virt-sysprep, virt-customize, qemu-img) failed."""


class LabError(VirtfleetError):
    """The local lab could not be built, started or cleared."""


class Cancelled(VirtfleetError):
    """The operator stopped the operation (Ctrl-C) and it was undone; exit 130 like any
    interrupted command."""

    exit_code = 130


class Unauthorized(VirtfleetError):
    """A request to the API without a usable token (missing, unknown, expired, revoked, or its
    user disabled). Deliberately vague about which: a guesser learns nothing."""

    exit_code = 5


class Forbidden(VirtfleetError):
    """The caller is known but holds no grant for `permission` on the target; nothing was
    done. Names the permission missing, so the caller knows what to ask an admin for."""

    exit_code = 5

    def __init__(self, detail: str, *, permission: str, target: str) -> None:
        super().__init__(detail)
        self.permission = permission
        self.target = target

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), "permission": self.permission, "target": self.target}
