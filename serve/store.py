"""Job records in SQLite (WAL). Every state change is a compare-and-set, so several threads — or several Serve
replicas sharing the file — can move the queue without double-starting or losing a job.

Statuses: IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED | CANCELLED (IN_QUEUE → CANCELLED too).
An IN_PROGRESS record with `submitted_at` NULL has been claimed by a scheduler but its Ray job is not (yet) known
to have been submitted. A job cancelled while IN_PROGRESS keeps `stop_pending = 1` until Ray reports its job
finished: until then it still holds its workers, so it still counts against `max_running`.

Resuming: FAILED | CANCELLED (stopped) → IN_QUEUE by the owner (`resume`), or IN_PROGRESS → IN_QUEUE when its Ray
job vanished, e.g. with the cluster's restart (`requeue_lost`). Either bumps `attempt`, and each attempt is its own
Ray job (`ray_job_id` is set by the claim); the job's output directory, and so its checkpoints and latent cache, stay
the same. `auto_resumes` counts the automatic requeues since the submission or the last manual resume.

The queue is ordered by `queue_key`: increasing at submission, renewed by a manual resume (back of the queue), kept
by an automatic one (the job was running: it goes first again).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"
ACTIVE = (IN_QUEUE, IN_PROGRESS)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    ray_job_id TEXT,
    submitted_at REAL,
    out_dir TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    billing_units INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    stop_pending INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    auto_resumes INTEGER NOT NULL DEFAULT 0,
    queue_key INTEGER,
    webhook TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""

# Columns added since the first schema: (name, declaration). A database created before them gets them on open.
ADDED_COLUMNS = (
    ("attempt", "INTEGER NOT NULL DEFAULT 0"),
    ("auto_resumes", "INTEGER NOT NULL DEFAULT 0"),
    ("queue_key", "INTEGER"),
    ("webhook", "TEXT"),
)
NEXT_QUEUE_KEY = "(SELECT COALESCE(MAX(queue_key), 0) + 1 FROM jobs)"


@dataclass(frozen=True)
class JobRecord:
    seq: int
    id: str
    owner: str
    endpoint: str
    request: dict
    status: str
    ray_job_id: str | None
    submitted_at: float | None
    out_dir: str
    created: float
    updated: float
    billing_units: int
    error: dict | None  # {"msg": str, "detail": [{loc, msg}]?}
    result: dict | None  # result.json as the job wrote it (COMPLETED only)
    stop_pending: int  # 1: cancelled while running, and Ray has not yet confirmed the job stopped
    attempt: int = 0  # 0: the first run; n: the n-th resumption (its Ray job is `ltxtrain-<id>-r<n>`)
    auto_resumes: int = 0  # automatic requeues (lost Ray job) since the submission or the last manual resume
    queue_key: int | None = None  # queue order
    # fal_webhook: {url, base, state: pending|sending|delivered|failed, attempts, last, delivered_at}
    webhook: dict | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "JobRecord":
        d = dict(row)
        d["request"] = json.loads(d["request"])
        d["error"] = json.loads(d["error"]) if d["error"] else None
        d["result"] = json.loads(d["result"]) if d["result"] else None
        d["webhook"] = json.loads(d["webhook"]) if d.get("webhook") else None
        return cls(**d)


class JobStore:
    def __init__(self, path: str, busy_timeout_s: float = 30.0):
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema (idempotent; replicas opening the same file
        at once serialize on the write lock, and the later ones find nothing to do)."""
        with self._transaction() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
            db.execute("UPDATE jobs SET queue_key = seq WHERE queue_key IS NULL")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, queue_key)")

    # ------------------------------------------------------------------------------------------------ plumbing
    @contextmanager
    def _connect(self):
        # One short-lived connection per operation: safe from any thread, and cheap for SQLite.
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE: takes the write lock up front, so read-then-write decisions are atomic across
        processes."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------------------------------------ reads
    def get(self, job_id: str) -> JobRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def list_for(self, owner: str, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """This owner's jobs, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                              (owner, limit, offset)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def stopping(self) -> list[JobRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE stop_pending = 1 ORDER BY seq").fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def with_status(self, status: str) -> list[JobRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def queue_position(self, job: JobRecord) -> int | None:
        """How many queued jobs start before this one (0: it is next), as fal counts; None when it is not queued."""
        with self._connect() as db:
            row = db.execute("SELECT status, (SELECT COUNT(*) FROM jobs WHERE status = ? AND queue_key < j.queue_key) "
                             "FROM jobs j WHERE id = ?", (IN_QUEUE, job.id)).fetchone()
        if not row or row[0] != IN_QUEUE:
            return None
        return int(row[1])

    def count(self, status: str | None = None) -> int:
        with self._connect() as db:
            if status is None:
                return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0])

    # ------------------------------------------------------------------------------------------------ writes
    def create(self, owner: str, endpoint: str, request: dict, out_dir_for, job_id: str | None = None,
               webhook: dict | None = None) -> JobRecord:
        """Insert an IN_QUEUE record. `out_dir_for(job_id)` gives the job's output directory; `webhook` ({url, base})
        is delivered once the job ends."""
        job_id = job_id or uuid.uuid4().hex
        now = time.time()
        hook = json.dumps({**webhook, "state": "pending", "attempts": 0}) if webhook else None
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, owner, endpoint, request, status, out_dir, created, updated, queue_key, "
                       f"webhook) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {NEXT_QUEUE_KEY}, ?)",
                       (job_id, owner, endpoint, json.dumps(request), IN_QUEUE, str(out_dir_for(job_id)), now, now,
                        hook))
        return self.get(job_id)

    def claim_webhooks(self) -> list[JobRecord]:
        """Finished jobs whose webhook is pending, moved to 'sending' (so one replica delivers each)."""
        claimed = []
        pending = ("SELECT id, webhook FROM jobs WHERE webhook IS NOT NULL AND status IN (?, ?, ?) "
                   "AND json_extract(webhook, '$.state') = 'pending'")
        with self._connect() as db:  # the common case, nothing pending, takes no write lock
            if not db.execute(pending, TERMINAL).fetchone():
                return []
        with self._transaction() as db:
            rows = db.execute(pending, TERMINAL).fetchall()
            for job_id, hook in rows:
                db.execute("UPDATE jobs SET webhook = ? WHERE id = ?",
                           (json.dumps({**json.loads(hook), "state": "sending"}), job_id))
                claimed.append(job_id)
        return [self.get(i) for i in claimed]

    def update_webhook(self, job_id: str, **values) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT webhook FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row and row[0]:
                db.execute("UPDATE jobs SET webhook = ? WHERE id = ?",
                           (json.dumps({**json.loads(row[0]), **values}), job_id))

    def claim_next(self, max_running: int, ray_job_id_for) -> JobRecord | None:
        """Move the first queued job to IN_PROGRESS if fewer than `max_running` jobs are in progress.
        `ray_job_id_for(job_id, attempt)` names the Ray job of this attempt."""
        with self._transaction() as db:
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ? OR stop_pending = 1",
                                 (IN_PROGRESS,)).fetchone()[0]
            if running >= max_running:
                return None
            row = db.execute("SELECT id, attempt FROM jobs WHERE status = ? ORDER BY queue_key, seq LIMIT 1",
                             (IN_QUEUE,)).fetchone()
            if row is None:
                return None
            job_id, attempt = row
            db.execute("UPDATE jobs SET status = ?, ray_job_id = ?, submitted_at = NULL, updated = ? WHERE id = ?",
                       (IN_PROGRESS, ray_job_id_for(job_id, attempt), time.time(), job_id))
        return self.get(job_id)

    def mark_submitted(self, job_id: str, ray_job_id: str | None = None) -> bool:
        """Record that the Ray job exists. False when the job left IN_PROGRESS meanwhile (e.g. was cancelled), or
        given `ray_job_id`, when it is no longer the job's current Ray job."""
        return self._cas(job_id, (IN_PROGRESS,), ray_job_id, submitted_at=time.time())

    def requeue(self, job_id: str) -> bool:
        """A claim whose submission never happened (the claiming process died): back to the queue."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET status = ?, ray_job_id = NULL, updated = ? "
                             "WHERE id = ? AND status = ? AND submitted_at IS NULL",
                             (IN_QUEUE, time.time(), job_id, IN_PROGRESS))
            return cur.rowcount == 1

    def requeue_lost(self, job_id: str, ray_job_id: str) -> bool:
        """The submitted Ray job `ray_job_id` no longer exists (the cluster was restarted): queue the job again as
        a new attempt, keeping its place at the front. False when the record moved on meanwhile (another replica
        requeued it first, or a newer attempt runs)."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET status = ?, ray_job_id = NULL, submitted_at = NULL, error = NULL, "
                             "attempt = attempt + 1, auto_resumes = auto_resumes + 1, updated = ? "
                             "WHERE id = ? AND status = ? AND ray_job_id = ? AND submitted_at IS NOT NULL",
                             (IN_QUEUE, time.time(), job_id, IN_PROGRESS, ray_job_id))
            return cur.rowcount == 1

    def resume(self, job_id: str) -> bool:
        """FAILED, or CANCELLED and stopped (`stop_pending = 0`) → IN_QUEUE, at the back of the queue, as the next
        attempt. False when the job is in any other state (or does not exist)."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET status = ?, ray_job_id = NULL, submitted_at = NULL, error = NULL, "
                             f"result = NULL, billing_units = 0, attempt = attempt + 1, auto_resumes = 0, "
                             f"queue_key = {NEXT_QUEUE_KEY}, updated = ?, "
                             # a webhook is sent again when the resumed job ends
                             "webhook = json_set(webhook, '$.state', 'pending', '$.attempts', 0) "
                             "WHERE id = ? AND (status = ? OR (status = ? AND stop_pending = 0))",
                             (IN_QUEUE, time.time(), job_id, FAILED, CANCELLED))
            return cur.rowcount == 1

    def finish(self, job_id: str, status: str, billing_units: int = 0, error: dict | None = None,
               result: dict | None = None, ray_job_id: str | None = None) -> bool:
        """IN_PROGRESS → a terminal status. False if the job was no longer IN_PROGRESS (or, given `ray_job_id`, is
        no longer running that Ray job: a newer attempt is not ended by news about an older one)."""
        assert status in TERMINAL, status
        return self._cas(job_id, (IN_PROGRESS,), ray_job_id, status=status, billing_units=billing_units,
                         error=json.dumps(error) if error else None, result=json.dumps(result) if result else None)

    def cancel(self, job_id: str) -> str | None:
        """Mark an active job CANCELLED. Returns the status it had (so the caller knows whether a Ray job may need
        stopping), or None if there is no such job."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] in ACTIVE:
                db.execute("UPDATE jobs SET status = ?, stop_pending = ?, updated = ? WHERE id = ?",
                           (CANCELLED, int(row[0] == IN_PROGRESS), time.time(), job_id))
            return row[0]

    def stopped(self, job_id: str) -> None:
        """Ray confirmed the cancelled job's end: its slot is free."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET stop_pending = 0, updated = ? WHERE id = ?", (time.time(), job_id))

    def _cas(self, job_id: str, from_status: tuple[str, ...], ray_job_id: str | None = None, **values) -> bool:
        values["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        marks = ", ".join("?" for _ in from_status)
        where, args = f"id = ? AND status IN ({marks})", [job_id, *from_status]
        if ray_job_id is not None:
            where, args = where + " AND ray_job_id = ?", [*args, ray_job_id]
        with self._transaction() as db:
            cur = db.execute(f"UPDATE jobs SET {cols} WHERE {where}", (*values.values(), *args))
            return cur.rowcount == 1
