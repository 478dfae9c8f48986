"""Outcome verifiers: math-verify for math answers, integer comparison for AIME, exact match.

:class:`MathVerifier` grades in worker processes. math-verify's own timeouts use SIGALRM, which
fails outside a main thread and cannot stop a sympy call stuck in C code; here each worker calls it
in its own main thread with those timeouts off, reports every item as it finishes, and a worker that
spends longer than ``timeout`` seconds on one item is killed and replaced: that item grades 0.0 and
the rest of its chunk goes to the new worker. So a hung item cannot hold the run, and
``verify_batch`` works from any thread.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait

from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.base import OutcomeVerifier, VerifyItem

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    found = None
    for m in _BOX.finditer(text):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    return found


def grade_math(response: str, reference: str) -> float:
    """1.0 when the response's last boxed answer (or, without one, what math-verify extracts from
    the whole response) equals the reference wrapped in ``\\boxed{}``; call it in a main thread."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    try:
        gold = parse("\\boxed{" + reference + "}", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        boxed = extract_boxed(response)
        target = "\\boxed{" + boxed + "}" if boxed is not None else response
        pred = parse(target, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None)
        if not gold or not pred:
            return 0.0
        return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0
    except Exception:
        return 0.0


def _serve(conn: Connection, grade: Callable[[str, str], float]) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        grade("\\boxed{1}", "1")  # imports and warms up outside any item's time limit
    except BaseException:
        pass
    conn.send(("ready", 0.0))
    while True:
        job = conn.recv()
        if job is None:
            return
        for index, response, reference in job:
            try:
                score = float(grade(response, reference))
            except BaseException:  # math-verify's TimeoutException is a BaseException
                score = 0.0
            conn.send((index, score))


class _Worker:
    def __init__(self, ctx, grade: Callable[[str, str], float]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, grade), daemon=True)
        self.proc.start()
        child.close()
        self.todo: list[tuple[int, str, str]] = []
        self.since = 0.0

    def wait_ready(self, limit: float = 120.0) -> None:
        """Block until the worker has started and warmed up."""
        if not self.conn.poll(limit) or self.conn.recv()[0] != "ready":
            self.kill()
            raise RuntimeError("a grading worker did not start")

    def give(self, chunk: list[tuple[int, str, str]]) -> None:
        self.todo = list(chunk)
        self.since = time.monotonic()
        self.conn.send(chunk)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=1)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


class MathVerifier(OutcomeVerifier):
    """math-verify grading in worker processes with a per-item ``timeout`` (see the module doc).

    ``grade`` replaces the per-item function (a picklable ``(response, reference) -> score``).
    """

    name = "math"

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        workers: int | None = None,
        chunk: int = 16,
        grade: Callable[[str, str], float] = grade_math,
    ) -> None:
        if timeout <= 0:
            raise ReasonError("timeout", f"must be positive (got {timeout})", "give seconds per item")
        self.timeout = timeout
        self.n_workers = workers or min(4, os.cpu_count() or 1)
        self.chunk = chunk
        self.grade = grade
        self._ctx = mp.get_context("spawn")
        self._pool: list[_Worker] = []
        self.timeouts = 0

    def _ensure(self) -> None:
        fresh = [_Worker(self._ctx, self.grade) for _ in range(self.n_workers - len(self._pool))]
        for w in fresh:
            w.wait_ready()
        self._pool.extend(fresh)

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[float]:
        if not items:
            return []
        scores: list[float | None] = [None] * len(items)
        jobs = [(i, it.response, it.reference) for i, it in enumerate(items)]
        queue = [jobs[k : k + self.chunk] for k in range(0, len(jobs), self.chunk)]
        self._ensure()
        busy: dict[Connection, _Worker] = {}
        idle = list(self._pool)
        while queue or busy:
            while queue and idle:
                w = idle.pop()
                w.give(queue.pop(0))
                busy[w.conn] = w
            ready = wait(list(busy), timeout=min(0.5, self.timeout))
            now = time.monotonic()
            for conn in ready:
                w = busy[conn]
                try:
                    index, score = conn.recv()
                except (EOFError, OSError):
                    self._replace(w, busy, idle, queue, scores, died=True)
                    continue
                scores[index] = score
                w.todo = [j for j in w.todo if j[0] != index]
                w.since = now
                if not w.todo:
                    del busy[conn]
                    idle.append(w)
            for w in [w for w in busy.values() if now - w.since > self.timeout]:
                self._replace(w, busy, idle, queue, scores, died=False)
        return [0.0 if s is None else s for s in scores]

    def _replace(self, w: _Worker, busy, idle, queue, scores, died: bool) -> None:
        # The item it was on is hung (or crashed it): it grades 0.0; the rest of the chunk is requeued.
        busy.pop(w.conn, None)
        hung, rest = w.todo[0], w.todo[1:]
        scores[hung[0]] = 0.0
        self.timeouts += 0 if died else 1
        w.kill()
        self._pool.remove(w)
        fresh = _Worker(self._ctx, self.grade)
        fresh.wait_ready()
        self._pool.append(fresh)
        idle.append(fresh)
        if rest:
            queue.insert(0, rest)

    def close(self) -> None:
        """Stop the worker processes."""
        for w in self._pool:
            w.stop()
        self._pool = []

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _final(text: str) -> str:
    boxed = extract_boxed(text)
    return boxed if boxed is not None else text


class IntegerVerifier(OutcomeVerifier):
    """AIME-style grading: the last boxed answer (else the last integer in the text) equals the
    reference as an integer ("025" equals 25)."""

    name = "aime"

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[float]:
        out = []
        for it in items:
            gold = _integer(str(it.reference).strip())
            if gold is None:
                raise ReasonError("reference", f"{it.reference!r} is not an integer", "AIME answers are integers")
            boxed = extract_boxed(it.response)
            text = boxed if boxed is not None else it.response
            nums = re.findall(r"[-+]?\d+", text.replace(",", ""))
            got = _integer(nums[-1]) if nums else None
            out.append(1.0 if got == gold else 0.0)
        return out


def _integer(text: str) -> str | None:
    """The canonical form of an integer written in ``text`` (sign, no leading zeros), compared as text
    so numbers past Python's int-conversion digit limit cannot raise; None when it is not one."""
    m = re.fullmatch(r"([-+]?)0*(\d+)", text)
    if m is None:
        return None
    digits = m.group(2)
    return digits if m.group(1) != "-" or digits == "0" else "-" + digits


class ExactMatchVerifier(OutcomeVerifier):
    """The last boxed answer (else the whole response), whitespace-normalised, equals the reference."""

    name = "exact"

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[float]:
        norm = lambda s: " ".join(str(s).split())
        return [1.0 if norm(_final(it.response)) == norm(it.reference) else 0.0 for it in items]


verifiers.add("math", MathVerifier)
verifiers.add("aime", IntegerVerifier)
verifiers.add("exact", ExactMatchVerifier)
