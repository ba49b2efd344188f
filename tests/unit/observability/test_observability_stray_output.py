"""With `--log-format json`, what Python itself writes to stderr goes through the log too:
warnings, a dying thread's traceback, an error raised where none can be. Each is one JSON line
with a level, never raw lines a log pipeline reading a line at a time would break on.

Run in a process of its own, through the server's real entry point, with `main` standing in
for a server whose plugins do such things (the hooks are the process's: a test runner keeps its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

ENTRY = textwrap.dedent("""
    import gc, sys, threading, warnings
    import numpy
    from videodag_service import server
    from videodag_service.observability.logging import configure_logging

    class Leaky:
        def __del__(self):
            raise RuntimeError("raised in __del__")

    def a_server_whose_plugins_are_noisy(argv=None):
        configure_logging("INFO", json_lines=True)
        numpy.array([1.0]) / numpy.array([0.0])  # RuntimeWarning: divide by zero
        warnings.warn("this option is deprecated", UserWarning)
        helper = threading.Thread(target=lambda: 1 / 0, name="noisy-helper")
        helper.start()
        helper.join()
        Leaky()
        gc.collect()
        return 3

    server.main = a_server_whose_plugins_are_noisy
    sys.exit(server.run_as_process())
""")


def test_warnings_and_tracebacks_of_a_server_process_are_json_log_lines() -> None:
    ran = subprocess.run([sys.executable, "-c", ENTRY], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 3, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines()]  # every line is one JSON object
    by_message = {entry["message"]: entry for entry in lines}
    assert any("RuntimeWarning: divide by zero" in message and by_message[message]["level"] == "WARNING"
               for message in by_message), lines
    assert any("UserWarning: this option is deprecated" in message for message in by_message), lines
    thread = by_message["uncaught exception in thread noisy-helper"]
    assert thread["level"] == "ERROR" and "ZeroDivisionError: division by zero" in thread["exception"]
    (unraisable,) = [entry for entry in lines if "__del__" in entry["message"]]
    assert unraisable["level"] == "ERROR" and "RuntimeError: raised in __del__" in unraisable["exception"]


def test_an_uncaught_error_of_the_main_thread_is_a_json_log_line_and_still_fails_the_process() -> None:
    entry = ENTRY.replace("    return 3\n", "    raise LookupError('a bug of its own')\n")
    assert entry != ENTRY
    ran = subprocess.run([sys.executable, "-c", entry], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1
    last = json.loads(ran.stderr.splitlines()[-1])
    assert last["level"] == "CRITICAL" and last["message"] == "uncaught exception"
    assert "LookupError: a bug of its own" in last["exception"]
