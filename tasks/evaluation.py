"""Evaluation runs: a strategy over a suite at several budgets, one JSONL record per problem and
budget, written as each problem finishes.

A run is fixed by its :class:`EvalConfig`; its hash goes into every record, so a rerun with the same
``out`` file skips the records already there (resume) and refuses a file written under another
config. ``shard=(i, n)`` takes the problems whose position in the suite is ``i`` modulo ``n``; each
problem's seed depends only on the run's seed and the problem's id, so shards merged with
:func:`merge_runs` equal the unsharded run record for record.

One process writes a run file at a time: :func:`run_lock` (taken by :func:`evaluate` and
:func:`merge_runs`) holds an ``flock`` on it, and a second writer is refused at once. A problem whose
prompt does not fit in the model's context is recorded as failed (``error`` says why), so the run
goes on and a rerun skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from reason.core.errors import ReasonError
from reason.core.seeding import derive_seed
from rewards.base import VerifyItem
from search.domain import Problem
from search.solve import check_options, solve_problems

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]


class EvalConfig(BaseModel):
    """Everything that decides a run's records (not where they go, which shard, or how many)."""

    suite: str
    strategy: str
    model: str
    prm: str | None = None
    value: str | None = None
    seed: int = 0
    temperature: float = 0.8
    max_tokens: int = 1024
    options: dict[str, Any] = Field(default_factory=dict)
    prompt_template: str | None = None
    data: str | None = None
    levels: list[int] | None = None
    subjects: list[str] | None = None
    aggregation: str = "last"
    budget_tokens: int | None = None
    sampling: dict[str, float] = Field(default_factory=dict)  # run-wide filters and penalties (top_p, min_p, ...)

    def digest(self) -> str:
        """A short stable hash of the config (fields added later count only when set, so files of
        earlier runs still resume)."""
        fields = self.model_dump(mode="json")
        for key, default in (("aggregation", "last"), ("budget_tokens", None), ("sampling", {})):
            if fields[key] == default:
                del fields[key]
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        """The strategy with its options, for tables and plot legends."""
        shown = dict(self.options)
        if self.aggregation != "last":
            shown["aggregation"] = self.aggregation
        if self.budget_tokens is not None:
            shown["budget_tokens"] = self.budget_tokens
        opts = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        return f"{self.strategy} ({opts})" if opts else self.strategy


class CandidateRecord(BaseModel):
    """One candidate of a search: its extracted answer, score, correctness and how many samples it
    stands for (identical samples are one merged candidate)."""

    answer: str | None
    score: float | None
    correct: bool
    count: int = 1


class EvalRecord(BaseModel):
    """One problem at one budget."""

    id: str
    index: int  # position in the (filtered) suite
    budget: int
    label: str
    answer: str | None
    gold: str
    correct: bool
    candidates: list[CandidateRecord]
    ledger: dict[str, Any]
    seed: int
    config_hash: str
    level: int | str | None = None
    subject: str | None = None
    text: str = ""
    error: str | None = None  # set when the problem could not run (e.g. its prompt overflows the context)
    search: dict[str, Any] | None = None  # with save_trees: the search with its tree (docs/tree-schema.md)

    @model_serializer(mode="wrap")
    def _drop_empty_search(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("search") is None:  # runs without trees keep their record lines as before
            data.pop("search", None)
        return data

    def key(self) -> tuple[int, str]:
        """What identifies the record within a run."""
        return self.budget, self.id


def problem_seed(seed: int, problem_id: str) -> int:
    """The search seed of a problem: depends on the run's seed and the id only (not the shard)."""
    return derive_seed(seed, int(hashlib.sha256(problem_id.encode()).hexdigest()[:12], 16))


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based ``i``) as a pair; a one-line error otherwise."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ReasonError("shard", f"{spec!r} is not i/n", "write e.g. --shard 0/2 (shards are numbered from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise ReasonError("shard", f"{spec!r} needs 0 <= i < n", "number shards 0..n-1, e.g. 0/2 and 1/2")
    return i, n


def parse_budgets(spec: str | Sequence[int]) -> list[int]:
    """``"4,8,16"`` (or a list) as positive ints."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        budgets = [int(b) for b in items]
    except ValueError:
        raise ReasonError("budget", f"{spec!r} is not a list of integers", "write e.g. --budget 1,4,16") from None
    if not budgets or any(b < 1 for b in budgets):
        raise ReasonError("budget", f"every budget must be at least 1 (got {spec!r})", "write e.g. --budget 1,4,16")
    return budgets


_held: dict[tuple[int, int], list[int]] = {}  # run files this process has locked: (device, inode) -> [depth, fd]
_held_guard = threading.Lock()


@contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold the writer's lock of run file ``path`` (created if absent) while the block runs.

    The lock is an exclusive ``flock`` on the file itself, so the kernel drops it when its holder
    exits, even on ``kill -9`` (a resume then takes it again). If another process holds it this is a
    one-line error at once, not a wait. Re-entrant within one process. A file this call created and
    that is still empty at the end is removed, so a run that fails before its first record leaves
    no empty file behind."""
    path = Path(path)
    existed = path.exists()
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ReasonError("out", f"cannot open {path} ({exc.strerror})", "give a writable file path") from None
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with _held_guard:
            if key in _held:  # this process holds it already (the CLI locks before evaluate does)
                _held[key][0] += 1
                os.close(fd)
                break
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ReasonError("out", f"{path} is being written by another running reason eval",
                                  "wait for it to finish (a rerun then resumes the file), or give another --out") from None
        try:  # the holder before us may have removed the file: then lock the one now at the path
            now = os.stat(path)
            current = (now.st_dev, now.st_ino) == key
        except FileNotFoundError:
            current = False
        if current:
            with _held_guard:
                _held[key] = [1, fd]
            break
        os.close(fd)
    try:
        yield
    finally:
        with _held_guard:
            _held[key][0] -= 1
            owner_fd = _held.pop(key)[1] if _held[key][0] == 0 else -1
        if owner_fd >= 0:
            if not existed and os.fstat(owner_fd).st_size == 0:
                path.unlink(missing_ok=True)  # still locked, so no writer is using it
            os.close(owner_fd)


def read_records(path: str | Path, config_hash: str | None = None) -> list[EvalRecord]:
    """The records of a run file. A torn last line (a run killed mid-write) is cut off the file
    (only ignored while another process holds the file's lock: it may be a line being written);
    a malformed line elsewhere, or a record of another config, is a one-line error."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):  # torn last line: drop it, the problem reruns
        try:
            with run_lock(path):
                raw = path.read_bytes()
                raw = raw[: raw.rfind(b"\n") + 1]
                with open(path, "r+b") as fh:
                    fh.truncate(len(raw))
        except ReasonError:  # a running eval owns the file and its last line
            raw = raw[: raw.rfind(b"\n") + 1]
    records: list[EvalRecord] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = EvalRecord.model_validate_json(line)
        except ValueError:
            raise ReasonError("out", f"{path}:{number} is not an eval record", "point --out at a reason eval file") from None
        if config_hash is not None and record.config_hash != config_hash:
            raise ReasonError("out", f"{path} was written by a different config (hash {record.config_hash}, this run "
                              f"{config_hash})", "use a new --out file, or the same options as that run")
        records.append(record)
    return records


def grade(verifier: Any, problem: Problem, texts: Sequence[str]) -> list[bool]:
    """Whether each response text is correct for ``problem``."""
    scores = verifier.verify_batch([VerifyItem(problem.question, t, problem.answer) for t in texts])
    return [s >= 0.5 for s in scores]


def evaluate(engine: Any, problems: Sequence[Problem], config: EvalConfig, budgets: Sequence[int], *, domain: Any,
             verifier: Any, prm: Any = None, value: Any = None, prompts: Sequence[Any] | None = None,
             out: str | Path | None = None, shard: tuple[int, int] | None = None, batch_size: int = 32,
             on_record: Callable[[EvalRecord], None] | None = None, save_trees: bool = False) -> list[EvalRecord]:
    """Run ``config.strategy`` on ``problems`` at each budget; return every record of the run (those
    found in ``out`` and the new ones). Each record is appended to ``out`` and flushed as soon as
    its problem finishes, and handed to ``on_record``. ``batch_size`` problems search at once.
    ``out`` is locked for the whole call (:func:`run_lock`). A problem whose prompt overflows the
    model's context gets a failed record (``correct`` false, ``error`` saying why) and the rest run.
    With ``save_trees`` each record also holds its search with the tree (``search``), for ``reason view``."""
    check_options(config.strategy, config.options, {"temperature": config.temperature})
    if out is None:
        return _evaluate(engine, problems, config, budgets, domain=domain, verifier=verifier, prm=prm, value=value,
                         prompts=prompts, out=None, shard=shard, batch_size=batch_size, on_record=on_record,
                         save_trees=save_trees)
    with run_lock(out):
        return _evaluate(engine, problems, config, budgets, domain=domain, verifier=verifier, prm=prm, value=value,
                         prompts=prompts, out=out, shard=shard, batch_size=batch_size, on_record=on_record,
                         save_trees=save_trees)


def _evaluate(engine: Any, problems: Sequence[Problem], config: EvalConfig, budgets: Sequence[int], *, domain: Any,
              verifier: Any, prm: Any, value: Any, prompts: Sequence[Any] | None, out: str | Path | None,
              shard: tuple[int, int] | None, batch_size: int,
              on_record: Callable[[EvalRecord], None] | None, save_trees: bool = False) -> list[EvalRecord]:
    digest = config.digest()
    indexed = list(enumerate(problems))
    if shard is not None:
        indexed = [(i, p) for i, p in indexed if i % shard[1] == shard[0]]
    prompt_of = dict(enumerate(prompts)) if prompts is not None else None
    records = read_records(out, digest) if out is not None else []
    done = {r.key() for r in records}
    too_long = {i: why for i, p in indexed if (why := overflow(engine, p, None if prompt_of is None else prompt_of[i]))}
    sink = open(out, "a", encoding="utf-8") if out is not None else None

    def emit(record: EvalRecord) -> None:
        if sink is not None:
            sink.write(record.model_dump_json() + "\n")
            sink.flush()
            os.fsync(sink.fileno())
        records.append(record)
        done.add(record.key())
        if on_record is not None:
            on_record(record)

    def run(chunk: list[tuple[int, Problem]], budget: int) -> None:
        def keep(k: int, result: Any) -> None:
            index, problem = chunk[k]
            record = _record(result, problem, index, budget, config, digest, verifier)
            if save_trees:
                record.search = result.to_json_dict(include_tree=True)
            emit(record)

        try:
            solve_problems(engine, [p for _, p in chunk], domain=domain, strategy=config.strategy, budget=budget,
                           prm=prm, value=value, seeds=[problem_seed(config.seed, p.id) for _, p in chunk],
                           prompts=None if prompt_of is None else [prompt_of[i] for i, _ in chunk],
                           max_tokens=config.max_tokens, on_result=keep, temperature=config.temperature,
                           aggregation=config.aggregation, budget_tokens=config.budget_tokens,
                           sampling=config.sampling or None, **config.options)
        except ReasonError as exc:
            # A search that fills the context fails alone; the other problems of the chunk finished
            # (the runner waits for them). Rerun the unfinished ones singly to tell which failed.
            if exc.field != "node" or "context" not in exc.problem:
                raise
            if len(chunk) == 1:
                index, problem = chunk[0]
                emit(_failed(problem, index, budget, config, digest, f"the search stopped: {exc.problem}"))
                return
            for index, problem in chunk:
                if (budget, problem.id) not in done:
                    run([(index, problem)], budget)

    try:
        for budget in budgets:
            todo = [(i, p) for i, p in indexed if (budget, p.id) not in done]
            for i, p in todo:
                if i in too_long:
                    emit(_failed(p, i, budget, config, digest, too_long[i]))
            todo = [(i, p) for i, p in todo if i not in too_long]
            for start in range(0, len(todo), batch_size):
                run(todo[start:start + batch_size], budget)
    finally:
        if sink is not None:
            sink.close()
    return records


def overflow(engine: Any, problem: Problem, prompt: Any = None) -> str | None:
    """Why ``problem``'s prompt cannot run on ``engine`` (it fills the model's context), or None.
    ``prompt`` defaults as :func:`search.solve.solve_problems` defaults it."""
    limit = getattr(engine, "max_context", None)
    if limit is None or not hasattr(engine, "tokenize_prompt"):
        return None
    if prompt is None:
        chat = engine.has_chat_template()
        prompt = [{"role": "user", "content": problem.question}] if chat else problem.prompt
    size = len(engine.tokenize_prompt(prompt)[0])
    if size < limit:
        return None
    return f"the prompt is {size} tokens, which fills the model's context ({limit} tokens)"


def _failed(problem: Problem, index: int, budget: int, config: EvalConfig, digest: str, why: str) -> EvalRecord:
    return EvalRecord(id=problem.id, index=index, budget=budget, label=config.label(), answer=None, gold=problem.answer,
                      correct=False, candidates=[], ledger={}, seed=problem_seed(config.seed, problem.id),
                      config_hash=digest, level=problem.meta.get("level"), subject=problem.meta.get("subject"),
                      error=why)


def _record(result: Any, problem: Problem, index: int, budget: int, config: EvalConfig, digest: str,
            verifier: Any) -> EvalRecord:
    texts = [c.text for c in result.candidates]
    right = grade(verifier, problem, texts + [result.text])
    cands = [CandidateRecord(answer=c.answer, score=c.score, correct=ok, count=c.count)
             for c, ok in zip(result.candidates, right)]
    ledger = result.ledger.model_dump(mode="json")
    return EvalRecord(id=problem.id, index=index, budget=budget, label=config.label(), answer=result.answer,
                      gold=problem.answer, correct=right[-1], candidates=cands, ledger=ledger,
                      seed=problem_seed(config.seed, problem.id), config_hash=digest,
                      level=problem.meta.get("level"), subject=problem.meta.get("subject"), text=result.text)


def merge_runs(paths: Iterable[str | Path], out: str | Path) -> list[EvalRecord]:
    """Join shard files of one run into ``out`` (sorted by budget and suite position); shards of
    different configs, or two different records for one problem and budget, are refused."""
    with run_lock(out):
        return _merge(paths, out)


def _merge(paths: Iterable[str | Path], out: str | Path) -> list[EvalRecord]:
    merged: dict[tuple[int, str], EvalRecord] = {}
    digest = None
    for path in paths:
        if not Path(path).exists():
            raise ReasonError("merge", f"{path} does not exist", "give the shard files written by reason eval --shard")
        for record in read_records(path):
            digest = digest or record.config_hash
            if record.config_hash != digest:
                raise ReasonError("merge", f"{path} holds a run of a different config ({record.config_hash} vs {digest})",
                                  "merge shards of one run only")
            seen = merged.get(record.key())
            if seen is not None and seen.model_dump(exclude={"ledger", "search"}) != record.model_dump(exclude={"ledger", "search"}):
                raise ReasonError("merge", f"problem {record.id} at budget {record.budget} differs between shards",
                                  "merge shards of one run only")
            merged.setdefault(record.key(), record)
    ordered = sorted(merged.values(), key=lambda r: (r.budget, r.index))
    Path(out).write_text("".join(r.model_dump_json() + "\n" for r in ordered), encoding="utf-8")
    return ordered


def timing_free(record: EvalRecord) -> dict[str, Any]:
    """A record without its wall-clock fields (its ledger's and, with a saved search, the search's),
    for comparing runs."""

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    return drop(record.model_dump())

