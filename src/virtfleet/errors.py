"""virtfleet's one error hierarchy.

Every failure a user can see is one of these. The CLI turns them into a one-line message and an
exit code; fan-out code reports them per host. `retryable` says whether trying the same thing
again later may succeed (a host that did not answer) or not (a name that breaks a rule).
"""

from __future__ import annotations


class VirtfleetError(Exception):
    """Base of every error virtfleet raises on purpose."""

    exit_code = 1
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def kind(self) -> str:
        """Short machine-readable name for --json output ("not-found", "host-unavailable")."""
        out = []
        for i, ch in enumerate(type(self).__name__):
            if ch.isupper() and i:
                out.append("-")
            out.append(ch.lower())
        return "".join(out)


class InvalidInput(VirtfleetError):
    """Input broke a rule. Always names the field and the rule; exit code 2 like a usage error."""

    exit_code = 2

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(VirtfleetError):
    exit_code = 3


class Conflict(VirtfleetError):
    """The request clashes with what exists (a duplicate name, a VM that is running)."""

    exit_code = 4


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
