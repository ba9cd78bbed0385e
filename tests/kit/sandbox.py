"""Run a command under the seccomp rules a systemd unit asks for, without systemd.

The test machine has no running systemd, so the units in deploy/systemd cannot be
started. Their riskiest settings for a Python program are the seccomp ones: a system call
or memory mapping our dependencies need might be refused. This module reads those
settings from the unit file and installs the same kind of filter with libseccomp before
``exec``-ing the command::

    python -m tests.kit.sandbox deploy/systemd/vessel-relay-agent.service -- vessel-relay ...

What it enforces, as systemd 252 does (src/shared/seccomp-util.c):

- ``SystemCallFilter=``: the allow list (groups expanded by ``systemd-analyze
  syscall-filter``, so systemd's own sets), minus the ``~`` lists, plus ``@default``;
  everything else fails with ``SystemCallErrorNumber=``.
- ``MemoryDenyWriteExecute=``: ``mmap`` with write and execute, ``mprotect`` and
  ``pkey_mprotect`` adding execute, ``shmat`` with ``SHM_EXEC`` fail with EPERM.
- ``RestrictAddressFamilies=``: ``socket()`` of another family fails with EAFNOSUPPORT.

It is stricter than systemd in one way: a system call newer than systemd 252 fails with
the error number rather than ENOSYS. Mount, user and /proc settings (ProtectSystem=,
PrivateUsers=, ProcSubset=, ...) are not reproduced.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
#: Address families socket() may be asked for (Linux's AF_MAX is below this).
FAMILIES = 64


def scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Each ``Key=value`` of the unit's [Service] section (repeated keys in order)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """systemd's system call groups (``@name`` -> members, groups unexpanded)."""
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            name = line.strip()
            if name and not name.startswith("#"):
                current.append(name)
        else:
            current = None
    return groups


def _expand(names: Sequence[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        if name.startswith("@"):
            found |= _expand(groups[name], groups)
        else:
            found.add(name)
    return found


def allowed_syscalls(filters: Sequence[str], groups: dict[str, list[str]]) -> set[str]:
    """The system calls ``SystemCallFilter=`` lines allow (an allow list first)."""
    if not filters or filters[0].startswith("~"):
        raise ValueError("the unit's first SystemCallFilter= must be an allow list")
    allowed = _expand(["@default"], groups)
    for value in filters:
        names = value.removeprefix("~").split()
        if value.startswith("~"):
            allowed -= _expand(names, groups)
        else:
            allowed |= _expand(names, groups)
    return allowed


def _family(name: str) -> int:
    value = getattr(socket, name, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown address family {name}")
    return value


def install_filter(unit: Path) -> None:
    """Install the unit's seccomp rules in this process (inherited by what it executes)."""
    settings = unit_settings(unit)
    allowed = allowed_syscalls(settings.get("SystemCallFilter", []), syscall_groups())
    (error_name,) = settings.get("SystemCallErrorNumber", ["EPERM"])[-1:]
    denied = scmp_act_errno(getattr(errno, error_name))
    mdwe = settings.get("MemoryDenyWriteExecute", ["false"])[-1] in ("true", "yes", "1")
    families = {_family(name) for name in " ".join(settings["RestrictAddressFamilies"]).split()}

    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(denied)
    if not context:
        raise OSError("seccomp_init failed")

    def rule(action: int, name: str, *conditions: tuple[int, int, int, int]) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0 or action == denied:
            return  # not a system call here, or what happens anyway (libseccomp refuses it)
        array = (_ArgCmp * max(len(conditions), 1))(*(_ArgCmp(*c) for c in conditions))
        result = lib.seccomp_rule_add_array(context, action, number, len(conditions), array)
        if result != 0:
            raise OSError(-result, f"seccomp rule for {name}")

    special = {"mmap", "mprotect", "pkey_mprotect", "shmat", "socket"}
    for name in sorted(allowed - special):
        rule(SCMP_ACT_ALLOW, name)
    wx = PROT_WRITE | PROT_EXEC
    if "mmap" in allowed:
        for prot in (0, PROT_WRITE, PROT_EXEC) if mdwe else (None,):
            if prot is None:
                rule(SCMP_ACT_ALLOW, "mmap")
            else:
                rule(SCMP_ACT_ALLOW, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, prot))
        if mdwe:
            rule(scmp_act_errno(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
    for name, bit in (("mprotect", PROT_EXEC), ("pkey_mprotect", PROT_EXEC), ("shmat", SHM_EXEC)):
        if name not in allowed:
            continue
        if mdwe:
            rule(SCMP_ACT_ALLOW, name, (2, SCMP_CMP_MASKED_EQ, bit, 0))
            rule(scmp_act_errno(errno.EPERM), name, (2, SCMP_CMP_MASKED_EQ, bit, bit))
        else:
            rule(SCMP_ACT_ALLOW, name)
    if "socket" in allowed:
        for family in range(FAMILIES):
            action = SCMP_ACT_ALLOW if family in families else scmp_act_errno(errno.EAFNOSUPPORT)
            rule(action, "socket", (0, SCMP_CMP_EQ, family, 0))
    if lib.seccomp_load(context) != 0:
        raise OSError("seccomp_load failed")


def main(argv: Sequence[str]) -> None:
    """``python -m tests.kit.sandbox UNIT -- COMMAND...``"""
    unit, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m tests.kit.sandbox UNIT -- COMMAND...")
    install_filter(Path(unit))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
