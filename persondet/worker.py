"""One function run in a forked process while this process does something else (``prepare`` reads and writes
its outputs there while it imports MLflow here: two cores instead of one).

Forking is safe only from a process that runs no other thread (``can_fork``): a lock another thread holds
at the fork stays held forever in the child.  Callers check it and otherwise call the function in-process;
a fresh interpreter (spawn, forkserver) would instead re-run the caller's main script.  The function reports
progress through ``note(key, value)``; its return value comes back pickled.  A ``PersondetError`` raised there is
raised here with the same message (and class, when it pickles), so a user still sees one
``persondet: error:`` line; any other failure is a RuntimeError carrying the worker's traceback.  Leaving the
``with`` block stops a worker that is still running.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
import traceback
from typing import Any, Callable

from persondet.errors import PersondetError


# What the function in this worker process asked to keep (``hold_until_exit``); None outside a worker.
_HELD: list | None = None


def hold_until_exit(value: Any) -> None:
    """In a worker: keep ``value`` alive until the process ends.  A forked worker ends with ``os._exit``,
    which drops its memory at once, while freeing a large structure (a prepared set: ~1 M objects) object by
    object before the result is sent costs 0.15 s.  Outside a worker: nothing (it is freed as usual)."""
    if _HELD is not None:
        _HELD.append(value)


def can_fork() -> bool:
    """Whether this process may fork a worker: it runs no thread but the main one."""
    return threading.active_count() == 1


class Worker:
    """``fn(*args, note=..., **kwargs)`` running in a child process; ``wait_for`` its notes, ``result()`` its
    value."""

    def __init__(self, fn: Callable[..., Any], *args: Any, background: bool = False, **kwargs: Any) -> None:
        """``background``: a thread of this process receives the worker's messages as they come, so the worker
        never waits on a full pipe (a note larger than its 64 KiB) while this process is busy; until the worker
        ends this process runs that thread, so it forks nothing meanwhile (``can_fork`` says no)."""
        context = multiprocessing.get_context("fork")
        self._conn, child_end = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(child_end, fn, args, kwargs), name="persondet-worker")
        self._process.start()
        child_end.close()  # the child holds the only writer: its exit ends our reads
        self.notes: dict[str, Any] = {}
        self._done: tuple | None = None
        self._inbox: queue.SimpleQueue | None = None
        if background:
            self._inbox = queue.SimpleQueue()
            threading.Thread(target=self._receive_all, name="persondet-worker-inbox", daemon=True).start()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_for(self, key: str) -> Any:
        """The value of note ``key`` once the worker sent it (None when the worker finished without it)."""
        while key not in self.notes and self._done is None:
            self._receive()
        return self.notes.get(key)

    def result(self) -> Any:
        """The function's return value; its error raised here."""
        while self._done is None:
            self._receive()
        kind, *payload = self._done
        if kind == "result":
            return payload[0]
        if kind == "error":
            pickled, message = payload  # the worker sent the pickle only once it loaded back there
            raise (pickle.loads(pickled) if pickled is not None else PersondetError(message)) from None
        raise RuntimeError(f"the {self._process.name} process failed:\n{payload[0]}")

    def close(self) -> None:
        """Stop the worker if it still runs, and reap it."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._conn.close()

    def _receive_all(self) -> None:
        """The background thread: every message into the inbox, then None at the end of the pipe."""
        try:
            while True:
                self._inbox.put(self._conn.recv())
        except Exception:  # noqa: BLE001 - EOF, a closed pipe, a message that does not unpickle: the end
            self._inbox.put(None)

    def _receive(self) -> None:
        try:
            message = self._conn.recv() if self._inbox is None else self._inbox.get()
            if message is None:
                raise EOFError
        except EOFError:  # the worker died without a word: killed (out of memory?) or crashed in C
            self._process.join()
            self._done = ("crash", f"it ended with exit status {self._process.exitcode} and no result")
            return
        if message[0] == "note":
            self.notes[message[1]] = message[2]
        else:
            self._done = message


def _child(conn, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    global _HELD
    _HELD = []

    def note(key: str, value: Any = True) -> None:
        conn.send(("note", key, value))

    try:
        conn.send(("result", fn(*args, note=note, **kwargs)))
    except PersondetError as exc:
        try:  # an error class whose constructor does not take its message back comes as a PersondetError
            pickled = pickle.dumps(exc)
            pickle.loads(pickled)
        except Exception:  # noqa: BLE001
            pickled = None
        conn.send(("error", pickled, str(exc)))
    except BaseException:  # noqa: BLE001 - a bug or an interrupt: the traceback goes to the caller
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()
