"""Runs Debian's sslsniff-bpfcc unchanged except for one compiler flag.

bcc 0.26 (bookworm) cannot compile sslsniff's program against bookworm's 6.1 kernel headers:
their min() macro carries a compile-time type check that bcc's clang leaves as a call to an
undefined function ("cannot call non-static helper function"). Undefining __OPTIMIZE__ turns the
kernel's compile-time assertions into no-ops; the program sslsniff loads is otherwise the same.
"""
import runpy
import sys

import bcc

_init = bcc.BPF.__init__


def _init_without_compiletime_asserts(self, *args, **kwargs):
    kwargs["cflags"] = list(kwargs.get("cflags") or []) + ["-U__OPTIMIZE__"]
    _init(self, *args, **kwargs)


bcc.BPF.__init__ = _init_without_compiletime_asserts
sys.argv = ["sslsniff-bpfcc"] + sys.argv[1:]
runpy.run_path("/usr/sbin/sslsniff-bpfcc", run_name="__main__")
